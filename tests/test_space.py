import json

import jax
import numpy as np
import pytest

from evonas.errors import SpaceError
from evonas.space import Gene, SearchSpace, text_classifier_space


def test_samples_stay_within_each_genes_choices():
    space = text_classifier_space()
    genomes = np.asarray(space.sample(jax.random.key(0), 500))
    assert genomes.shape == (500, space.num_genes) and genomes.dtype == np.int32
    assert (genomes >= 0).all() and (genomes < space.num_choices).all()
    assert all(len(np.unique(genomes[:, i])) == n for i, n in enumerate(space.num_choices))


def test_same_key_gives_same_genomes_and_different_keys_differ():
    space = text_classifier_space()
    first, again = space.sample(jax.random.key(3), 4), space.sample(jax.random.key(3), 4)
    assert (np.asarray(first) == np.asarray(again)).all()
    assert (np.asarray(first) != np.asarray(space.sample(jax.random.key(4), 4))).any()


def test_validate_names_the_bad_gene_value_and_range():
    space = text_classifier_space()
    genome = np.zeros(space.num_genes, np.int32)
    genome[space.index("width")] = 9
    with pytest.raises(ValueError, match=r"gene 'width' has value 9, allowed range is 0\.\.3"):
        space.validate(genome)
    with pytest.raises(ValueError, match="shape"):
        space.validate(genome[:-1])
    with pytest.raises(ValueError, match="integers"):
        space.validate(genome.astype(float))


def test_decode_and_encode_round_trip_through_json():
    space = text_classifier_space()
    for genome in np.asarray(space.sample(jax.random.key(1), 20)):
        choices = json.loads(json.dumps(space.decode(genome)))
        assert (space.encode(choices) == genome).all()
    with pytest.raises(ValueError, match="gene 'optimizer' has value 'adam'"):
        space.encode({**space.decode(genome), "optimizer": "adam"})


def test_space_itself_round_trips_through_json():
    space = text_classifier_space(widths=(16, 32), max_blocks=2)
    assert SearchSpace.from_json(json.loads(json.dumps(space.to_json()))) == space


def test_size_counts_every_architecture():
    space = SearchSpace((Gene("a", (1, 2, 3)), Gene("b", ("x", "y"))))
    assert space.size == 6
    assert text_classifier_space().size == np.prod(text_classifier_space().num_choices.astype(float))


def test_users_can_narrow_the_space_without_editing_evonas():
    space = text_classifier_space(max_blocks=2, ops=("attention", "gru"), widths=(48,), heads=(2, 3))
    assert space.gene("block1_op").choices == ("attention", "gru")
    assert space.gene("num_blocks").choices == (1, 2)
    with pytest.raises(SpaceError, match="space option ops must be a list of ops among .*, got 'transformer' in it"):
        text_classifier_space(ops=("attention", "transformer"))
    with pytest.raises(SpaceError, match="not divisible"):
        text_classifier_space(widths=(30,), heads=(4,))


def test_the_final_norm_is_a_gene_only_where_a_space_offers_it():
    from evonas.models import Architecture

    plain = text_classifier_space(max_blocks=1)
    assert "final_norm" not in plain.names
    assert Architecture.from_genome(plain, np.zeros(plain.num_genes, np.int32)).final_norm == "layernorm"
    space = text_classifier_space(max_blocks=1, final_norms=("layernorm", "none"))
    assert space.num_genes == plain.num_genes + 1
    genome = space.encode({**plain.decode(np.zeros(plain.num_genes, np.int32)), "final_norm": "none"})
    assert Architecture.from_genome(space, genome).final_norm == "none"
    with pytest.raises(SpaceError, match="space option final_norms must be a list of norms among"):
        text_classifier_space(final_norms=("batchnorm",))
