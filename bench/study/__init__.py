"""Studies: every strategy over a grid of settings, each setting an ordinary run (:mod:`bench.study.spec`,
:mod:`bench.cli.study` runs them), summarized by who beats whom how often (:mod:`bench.study.report`)."""
