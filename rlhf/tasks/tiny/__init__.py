"""The built-in "tiny assistant" task: generator.py writes its files, judge.py is its gold judge.

Its definition (topics, facts, phrase lists, contractors, judge weights) is task.json beside this file.
"""
