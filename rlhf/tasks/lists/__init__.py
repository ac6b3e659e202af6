"""The built-in "tiny lister" task: generator.py writes its files, judge.py is its gold judge.

Its definition (categories and items, count words, templates, contractors, judge weights) is task.json
beside this file. Unlike the tiny assistant (a free sequence of phrases), a reply here has a grammar
(header, comma-separated list, final period) and two rules that need the prompt read closely: the
requested count and the excluded item.
"""
