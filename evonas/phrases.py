"""Sentence groups: which lines of a split are phrases of another line, so that a carve keeps them together.

Phrase-level datasets such as GLUE's SST-2 list a sentence and many of its phrases as separate examples. A split
carved line by line would then validate on sentences whose phrases it trained on. `sentence_groups` maps every
line to the longest line that contains it as a run of whole words (whitespace-separated, case-sensitive), or to
itself where none does; an exact duplicate joins the group of its first occurrence. Every group's head contains
no other line's text but its own, so the heads are the dataset's whole sentences.
"""

from collections.abc import Sequence

import numpy as np


def sentence_groups(texts: Sequence[str]) -> np.ndarray:
    """The head of each line's group, as int64 indices into texts: a line heads its own group unless it is a
    word-aligned span of a longer line (the longest such, the first among equals) or repeats an earlier line."""
    normal = [" ".join(text.split()) for text in texts]
    first: dict[str, int] = {}
    for index, line in enumerate(normal):
        first.setdefault(line, index)
    span_lengths = {line.count(" ") + 1 for line in first if line}
    head = np.arange(len(texts))
    head_words = np.zeros(len(texts), np.int64)  # words in the longest container found so far
    for index in first.values():
        line = normal[index]
        ends = [position for position, char in enumerate(line) if char == " "] + [len(line)]
        starts = [0] + [end + 1 for end in ends[:-1]]
        words = len(ends)
        for count in range(1, words):
            if count not in span_lengths:
                continue
            for start in range(words - count + 1):
                inner = first.get(line[starts[start]:ends[start + count - 1]])
                if inner is not None and words > head_words[inner]:
                    head_words[inner], head[inner] = words, index
    for index, line in enumerate(normal):
        if first[line] != index:
            head[index] = head[first[line]]
    return head
