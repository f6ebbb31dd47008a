"""The run engine: a configuration checked into a plan, its units of work run round by round
(training F, selecting, labeling, diagnosing), checkpointed and written into a run folder."""
