"""Data augmentation for classification: EDA operations, masking, back-translation.

settings.py  the `data.augment` config section (imported by tunelab.config; kept light)
words.py     words of a text (whitespace for English, jieba for Chinese), stopwords, negations
synonyms.py  synonyms as nearest neighbours in the model's input embeddings
operations.py the operations on a list of words, each at its own rate
augmenter.py copies of one example, a pure function of (seed, epoch, example, copy)
backtranslate.py paraphrases through translation runs
epochs.py    the training set of each epoch (on the fly) and the materialised file
"""
