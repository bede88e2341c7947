"""The dashboard's ES modules: each one served, the page loading them as its Content-Security-Policy
allows (no inline script), and the page's state in one object rather than in bindings of each module."""

import re
from pathlib import Path

from orthanc_jobs.api.service import _UI_FILES

UI = Path(__file__).parents[3] / "src" / "orthanc_jobs" / "ui"
MODULES = sorted(path.name for path in UI.glob("*.js"))
_IMPORT = re.compile(r"""^import\s[^;]*?\sfrom\s+["']([^"']+)["'];""", re.MULTILINE | re.DOTALL)
_TOP_LEVEL_BINDING = re.compile(r"^(?:export\s+)?(?:let|var)\s", re.MULTILINE)


def test_every_module_is_served_as_javascript() -> None:
    assert "app.js" in MODULES and "state.js" in MODULES
    for name in MODULES:
        assert _UI_FILES.get(name, "").startswith("text/javascript"), name


def test_modules_import_only_served_modules_of_the_dashboard() -> None:
    for name in MODULES:
        for target in _IMPORT.findall((UI / name).read_text()):
            assert target.startswith("./") and target.endswith(".js"), f"{name} imports {target}"
            assert target.removeprefix("./") in MODULES, f"{name} imports {target}"


def test_the_page_loads_its_entry_module_and_no_inline_script() -> None:
    scripts = re.findall(r"<script\b[^>]*>(.*?)</script>", (UI / "index.html").read_text(), re.DOTALL)
    assert scripts == [""]
    assert '<script type="module" src="app.js"></script>' in (UI / "index.html").read_text()


def test_no_module_keeps_state_of_its_own() -> None:
    for name in MODULES:
        assert not _TOP_LEVEL_BINDING.search((UI / name).read_text()), f"{name}: put it in dashboard.js"
