"""Property-based fuzz of space validation and genome decoding: whatever a user (or a damaged file) gives,
the only error is the documented `SpaceError`, and whatever validates decodes into an architecture."""

import numpy as np
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from evonas.errors import SpaceError
from evonas.models import Architecture
from evonas.space import SPACE_CHOICES, SearchSpace, text_classifier_space

# What each keyword's choices are drawn from when they are meant to be valid: the allowed names, or numbers
# that are valid as well as some that are not.
VALID_POOLS = {
    "ops": ["identity", "attention", "conv3", "conv5", "conv7", "gated_mlp", "gru", "lstm", "bigru", "bilstm"],
    "activations": ["relu", "gelu", "swish", "tanh"],
    "norms": ["layernorm", "rmsnorm", "none"],
    "final_norms": ["layernorm", "rmsnorm", "none"],
    "widths": [2, 8, 16, 32, 48, 64, 96, 128, 33, 0, -16, 5000],
    "heads": [1, 2, 4, 8, 3, 0],
    "ffn_expansions": [1, 2, 4, 0, 17],
    "dropouts": [0.0, 0.1, 0.2, 0.5, 1.0, -0.1],
    "head_dropouts": [0.0, 0.5, 1.0, -0.1],
    "positionals": ["learned", "sinusoidal", "none"],
    "poolings": ["mean", "max", "first", "last"],
    "learning_rates": [1e-4, 3e-4, 1e-3, 0.0, 20.0],
    "weight_decays": [0.0, 1e-4, 1e-2, -1.0],
    "optimizers": ["adamw", "lion", "sgd"],
}
JUNK = st.one_of(
    st.none(), st.booleans(), st.integers(-(2**70), 2**70), st.floats(allow_nan=True), st.text(max_size=8),
    st.lists(st.one_of(st.integers(-5, 200), st.floats(), st.text(max_size=6), st.none(), st.booleans()), max_size=4),
    st.dictionaries(st.text(max_size=4), st.integers(), max_size=2),
)


@st.composite
def space_keywords(draw):
    """Keyword arguments of text_classifier_space: mostly plausible choice lists, some junk."""
    keywords = {}
    for name in draw(st.lists(st.sampled_from(sorted(SPACE_CHOICES)), unique=True, max_size=5)):
        if draw(st.integers(0, 4)):
            keywords[name] = draw(st.lists(st.sampled_from(VALID_POOLS[name]), min_size=0, max_size=4))
        else:
            keywords[name] = draw(JUNK)
    if draw(st.booleans()):
        keywords["max_blocks"] = draw(st.one_of(st.integers(-2, 20), JUNK))
    return keywords


def genomes(space):
    """Genomes of the space, near-misses (one gene out of range, a wrong length, floats) and junk."""
    n, choices = space.num_genes, [int(c) for c in space.num_choices]
    valid = st.tuples(*[st.integers(0, c - 1) for c in choices]).map(list)
    out_of_range = st.tuples(valid, st.integers(0, n - 1), st.sampled_from([-1, 1])).map(
        lambda t: [g if i != t[1] else (-1 if t[2] < 0 else choices[i]) for i, g in enumerate(t[0])])
    return st.one_of(valid, valid.map(np.array), out_of_range, st.lists(st.integers(-3, 10), max_size=n + 2),
                     valid.map(lambda g: [float(x) for x in g]), valid.map(lambda g: [*g, [0]]), JUNK)


@settings(max_examples=1000, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(keywords=space_keywords(), data=st.data())
def test_space_validation_and_genome_decoding_raise_only_space_errors(keywords, data):
    try:
        space = text_classifier_space(**keywords)
    except SpaceError:
        return
    genome = data.draw(genomes(space))
    try:
        values = space.validate(genome)
    except SpaceError:
        return
    choices = space.decode(values)
    assert (space.encode(choices) == values).all()
    architecture = Architecture.from_genome(space, values)
    assert 1 <= len(architecture.blocks) <= len(space.gene("num_blocks").choices)
    assert SearchSpace.from_json(space.to_json()) == space


@settings(max_examples=300, deadline=None)
@given(document=st.one_of(JUNK, st.lists(st.dictionaries(st.sampled_from(["name", "choices", "x"]), JUNK,
                                                          max_size=3), max_size=3)))
def test_a_damaged_space_document_raises_only_space_errors(document):
    try:
        space = SearchSpace.from_json(document)
    except SpaceError:
        return
    assert space.to_json() == document
