"""Review keys that act only on cells: the ``streamlit-hotkeys`` manager, with its key listener taught to ignore a
key typed into a text field (an input, a text area, a select or an editable element). Without this a reviewer
typing a comment or a name while keyboard review is on records decisions (issue: "typing a name records
decisions").

The package's own front-end (MIT licence) is copied once per process into the cache folder with one guard added at
the top of its key handler, and its manager is pointed at that copy; everything else (bindings, ``pressed``) is the
package's. A test checks the guard is in the copy that is served.
"""
from __future__ import annotations

import shutil
from pathlib import Path

import streamlit as st
import streamlit.components.v1 as components
import streamlit_hotkeys as hotkeys
from streamlit_hotkeys import manager

from leukoview.primitives import settings

HANDLER = "function onKeyDown(e) {"
GUARD = ("\n    const t = e.target; const tag = t && t.tagName ? String(t.tagName).toUpperCase() : '';"
         "\n    if (tag === 'INPUT' || tag === 'TEXTAREA' || tag === 'SELECT' || (t && t.isContentEditable)) return;"
         "  // leukoview: keys typed into a text field are text, not review keys")


def guarded_component_dir() -> Path:
    """The patched copy of the package's front-end (made once; rebuilt when the package changes)."""
    source = Path(manager._BUILD_DIR)
    js = (source / "index.js").read_text()
    if HANDLER not in js:
        raise RuntimeError("streamlit-hotkeys changed: its key handler was not found; review keys need the guard")
    target = settings.cache_dir() / "hotkeys-guarded"
    patched = js.replace(HANDLER, HANDLER + GUARD, 1)
    if not (target / "index.js").is_file() or (target / "index.js").read_text() != patched:
        if target.exists():
            shutil.rmtree(target)
        shutil.copytree(source, target)
        (target / "index.js").write_text(patched)
    return target


@st.cache_resource(show_spinner=False)
def _install() -> bool:
    manager._hotkeys_manager = components.declare_component("manager", path=str(guarded_component_dir()))
    return True


def activate(bindings: list, *, key: str) -> None:
    """:func:`streamlit_hotkeys.activate` with the text-field guard."""
    _install()
    hotkeys.activate(bindings, key=key)


hk = hotkeys.hk
pressed = hotkeys.pressed
