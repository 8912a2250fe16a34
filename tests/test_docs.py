"""Public functions are documented, and the examples in their docstrings run."""

import doctest
import inspect

import pytest

import metasp
import metasp.estimator
import metasp.evaluate

MODULES = [metasp, metasp.datasets, metasp.kernels, metasp.metrics, metasp.reference,
           metasp._solver, metasp._tasks, metasp._result, metasp._io,
           metasp.estimator, metasp._select_rank, metasp.evaluate, metasp.baselines,
           metasp.experiments]


@pytest.mark.parametrize("module", MODULES, ids=lambda module: module.__name__)
def test_docstring_examples(module):
    failures, _ = doctest.testmod(module, optionflags=doctest.NORMALIZE_WHITESPACE)
    assert failures == 0


PUBLIC = [metasp.fit, metasp.polish, metasp.datasets.make_hps, metasp.kernels.gradient, metasp.kernels.curvature,
          metasp.kernels.task_statistics,
          metasp.kernels.truncated_svd, metasp.metrics.sin_angle, metasp.metrics.subspace_distance,
          metasp.metrics.frobenius_error, metasp.MetaSPResult.adapt, metasp.MetaSPResult.predict,
          metasp.Tasks.from_frame, metasp.load, metasp.MetaSPResult.save,
          metasp.MetaSP.fit, metasp.MetaSP.transform, metasp.MetaSP.predict,
          metasp.MetaSP.adapt, metasp.MetaSP.predict_new, metasp.MetaSP.score,
          metasp.datasets.load_beijing_pm25, metasp.Tasks.subset, metasp.Tasks.split_tasks,
          metasp.Tasks.split_samples, metasp.MetaSPResult.fit_prior, metasp.select_rank,
          metasp.evaluate.few_shot,
          metasp.evaluate.format_table,
          metasp.baselines.mom, metasp.baselines.anil, metasp.baselines.burer_monteiro,
          metasp.baselines.altmin, metasp.baselines.altmin_gd, metasp.baselines.nuclear_norm,
          metasp.baselines.single_task, metasp.baselines.oracle, metasp.baselines.noise_level,
          metasp.baselines.default_lambda, metasp.experiments.run]


@pytest.mark.parametrize("function", PUBLIC, ids=lambda function: function.__qualname__)
def test_public_functions_have_numpydoc_sections(function):
    doc = inspect.getdoc(function)
    assert doc and "Parameters\n----------" in doc and "Returns\n-------" in doc
    documented = doc.split("Returns\n-------")[0]
    for name in inspect.signature(function).parameters:
        if name != "self":
            assert name in documented, f"{function.__qualname__} does not document {name}"


def test_public_names():
    for name in metasp.__all__:
        assert getattr(metasp, name).__doc__, name
