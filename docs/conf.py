"""Sphinx configuration: the API reference from the numpydoc docstrings, the guides in Markdown.

Build: ``.ci/docs`` (or ``sphinx-build -W -b html docs build/html`` with metasp installed).
The reference lists what ``metasp.__all__`` and the public submodules' ``__all__`` export,
through the ``public-api`` directive below, so no list of names is kept by hand.
"""

from __future__ import annotations

import importlib
import inspect
import re
import types

from docutils import nodes
from docutils.statemachine import StringList
from sphinx.util.docutils import SphinxDirective

import metasp

project = "metasp"
author = "The metasp developers"
copyright = "The metasp developers"
release = version = metasp.__version__

extensions = ["sphinx.ext.autodoc", "sphinx.ext.mathjax", "numpydoc", "myst_parser"]
source_suffix = {".rst": "restructuredtext", ".md": "markdown"}
exclude_patterns = ["_build", "requirements.txt"]
root_doc = "index"
html_theme = "alabaster"
myst_heading_anchors = 3
# The guides link to files beside docs/ (results, benchmark scripts) that are not pages.
suppress_warnings = ["myst.xref_missing"]

autodoc_default_options = {"member-order": "bysource"}
autodoc_typehints = "none"  # the numpydoc Parameters sections say the types
numpydoc_show_class_members = False
numpydoc_class_members_toctree = False
numpydoc_xref_param_type = False


def public_names(module: types.ModuleType) -> list[str]:
    """The names ``module`` exports, from its ``__all__``."""
    names = getattr(module, "__all__", None)
    if names is None:
        raise AttributeError(f"{module.__name__} has no __all__ to document")
    return list(names)


def public_modules() -> list[types.ModuleType]:
    """metasp and every submodule that ``metasp.__all__`` exports."""
    submodules = [getattr(metasp, name) for name in public_names(metasp)]
    return [metasp] + [value for value in submodules if inspect.ismodule(value)]


class PublicAPI(SphinxDirective):
    """``.. public-api:: module``: an autodoc entry for every name in ``module.__all__``.

    Modules in ``__all__`` are skipped: each public module gets its own ``public-api``.
    """

    required_arguments = 1

    def run(self):
        module = importlib.import_module(self.arguments[0])
        lines = []
        for name in public_names(module):
            value = getattr(module, name)
            target = f"{module.__name__}.{name}"
            if inspect.ismodule(value):
                continue
            if inspect.isclass(value):
                lines += [f".. autoclass:: {target}", "   :members:", ""]
            elif callable(value):
                lines += [f".. autofunction:: {target}", ""]
            else:
                lines += [f".. autodata:: {target}", "   :annotation:", ""]
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source=f"<public-api {module.__name__}>"),
                                self.content_offset, container)
        return container.children


class PublicModules(SphinxDirective):
    """``.. public-modules::``: a section per public module, each with its ``public-api``."""

    def run(self):
        lines = []
        for module in public_modules():
            title = f"``{module.__name__}``"
            lines += [title, "-" * len(title), "", f".. automodule:: {module.__name__}",
                      "   :no-members:", "", f".. public-api:: {module.__name__}", ""]
        container = nodes.container()
        self.state.nested_parse(StringList(lines, source="<public-modules>"), self.content_offset,
                                container, match_titles=True)
        return container.children


def skip_foreign_members(app, what, name, obj, skip, options):
    """Leave out class members another package generates (scikit-learn's set_*_request)."""
    module = getattr(obj, "__module__", None)
    if what == "class" and callable(obj) and module and not module.startswith("metasp"):
        return True
    return None


_SHAPE = re.compile(r"shape \([^)]*\)")
_TRAILING_UNDERSCORE = re.compile(r"\b(\w+)_(?=[,)\s])")


def escape_fitted_names_in_shapes(app, what, name, obj, options, lines):
    """Shapes such as ``(n_samples, n_features_in_)`` name fitted attributes, whose trailing
    underscore reStructuredText would read as a link reference: escape it there."""
    for i, line in enumerate(lines):
        lines[i] = _SHAPE.sub(lambda shape: _TRAILING_UNDERSCORE.sub(r"\1\\_", shape.group()), line)


def setup(app):
    app.connect("autodoc-process-docstring", escape_fitted_names_in_shapes)
    app.connect("autodoc-skip-member", skip_foreign_members)
    app.add_directive("public-api", PublicAPI)
    app.add_directive("public-modules", PublicModules)
    return {"parallel_read_safe": True}
