"""The course's tasks, one module per task, each with the same small surface:

* ``Settings``: ONE dataclass holding every default of the task (it extends
  ``helpers.train.TrainConfig``, so it is also the pool loop's configuration); the command line
  ``python -m helpers train TASK`` makes every field a flag;
* ``make_samples``: fresh pool entries; ``loss``: the training loss;
* ``measure``: the numbers a saved model's JSON reports about it;
* ``train(settings, out=...)``: train, measure, save with the settings recorded verbatim.

``texture`` (chapter 03) and ``mst`` (chapter 05, with its measurements in ``mst_metrics``).
"""
