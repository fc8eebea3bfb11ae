"""Words of a text and back: whitespace for English, jieba segmentation for Chinese.

Stopwords are never replaced by synonyms nor offered as synonyms; negations are never
deleted, replaced or masked, since dropping "not" or "不" flips a sentiment label.
"""

from __future__ import annotations

import logging
import re
from functools import lru_cache

CJK = re.compile(r"[\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")

# Chinese function words (no stopword list ships with a well-kept package offline)
ZH_STOPWORDS = frozenset(
    "的 了 着 过 是 在 和 与 及 或 而 也 就 都 又 还 把 被 让 给 对 从 向 到 于 以 为 这 那 "
    "这个 那个 一个 一 个 我 你 他 她 它 我们 你们 他们 她们 自己 啊 吧 呢 吗 呀 哦 嗯 "
    "之 其 此 所 得 地 有 要 会 能 可以 就是 但 但是 因为 所以 如果 虽然 然后".split())
NEGATIONS = frozenset(
    "not no never nor none nothing nobody nowhere neither without cannot n't hardly barely "
    "scarcely isn't aren't wasn't weren't don't doesn't didn't won't wouldn't can't couldn't "
    "shouldn't haven't hasn't hadn't 不 没 没有 无 非 未 别 不是 不要 不会 不能 不太 并不 "
    "从不 毫无 一点也不 不够".split())
ZH_NEGATORS = frozenset("不没无非未别")


@lru_cache(maxsize=1)
def english_stopwords() -> frozenset[str]:
    from sklearn.feature_extraction.text import ENGLISH_STOP_WORDS

    return frozenset(ENGLISH_STOP_WORDS) | {"'s", "'re", "'ve", "'ll", "'d", "'m"}


def is_chinese(text: str) -> bool:
    return CJK.search(text) is not None


def language_of(text: str, setting: str) -> str:
    """'zh' or 'en': the configured language, or (auto) Chinese if any CJK character occurs."""
    if setting != "auto":
        return setting
    return "zh" if is_chinese(text) else "en"


@lru_cache(maxsize=1)
def _jieba():
    import jieba

    jieba.setLogLevel(logging.WARNING)  # it prints dictionary loading to stderr
    jieba.initialize()
    return jieba


def split_words(text: str, language: str) -> list[str]:
    """English: whitespace tokens; Chinese: jieba's words (accurate mode), spaces dropped."""
    if language == "zh":
        return [w for w in _jieba().lcut(text, HMM=True) if w.strip()]
    return text.split()


def join_words(words: list[str], language: str) -> str:
    """The inverse of split_words: spaces between English words; Chinese words side by side,
    with a space only between two Latin/digit words."""
    if language != "zh":
        return " ".join(words)
    out: list[str] = []
    for word in words:
        if out and _latin(out[-1][-1]) and _latin(word[0]):
            out.append(" ")
        out.append(word)
    return "".join(out)


def _latin(ch: str) -> bool:
    return ch.isascii() and ch.isalnum()


def is_stopword(word: str) -> bool:
    w = word.lower()
    return w in english_stopwords() or w in ZH_STOPWORDS or w in NEGATIONS


def is_protected(word: str) -> bool:
    """Negations: an operation that removed or replaced one could flip the label. jieba
    keeps some negated words whole (不好, 没意思), so a Chinese word led by a negating
    character counts too, as does any English word ending in n't."""
    w = word.lower()
    return w in NEGATIONS or w.endswith("n't") or (w[:1] in ZH_NEGATORS and is_chinese(w))
