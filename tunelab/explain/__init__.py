"""Explanations: token attributions for trained runs, and how faithful they are.

encode (text <-> sub-tokens <-> words), attribute (IG, gradient x input, attention rollout),
words (sums per word, the Explanation record), explainers (per task), faithfulness
(ERASER comprehensiveness / sufficiency, deletion AOPC, a random baseline), render
(terminal, JSON, HTML). `tunelab.commands.explain` drives them."""
