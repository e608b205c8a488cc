"""Datasets: the synthetic set, VSPW, Cityscapes and CamVid behind one interface (:mod:`vssbench.datasets.base`)."""

DATASETS = ("synthetic", "vspw", "cityscapes", "camvid")  # the names --dataset takes (datasets.select opens them)


class DatasetError(ValueError):
    """Bad dataset input: names the offending path and what was expected. (Defined here, with no heavy
    imports, so that the command line can catch it without loading torch.)"""
