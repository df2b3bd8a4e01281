"""Numbers from marks: hop durations (timeline), clock offset, statistics, WER,
run folders and turn records (results), latency baselines and the regression
comparison.

Pure arithmetic over timestamps received as data; nothing here reads a clock
(run folders are the one kind of I/O: files written as each turn ends).
"""
