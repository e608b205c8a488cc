"""Datasets: the synthetic set, VSPW and Cityscapes behind one interface (:mod:`vssbench.datasets.base`)."""


class DatasetError(ValueError):
    """Bad dataset input: names the offending path and what was expected. (Defined here, with no heavy
    imports, so that the command line can catch it without loading torch.)"""
