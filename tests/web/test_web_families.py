"""A family's dashboard panels and CLI commands come through its `Task`, so a third-party
family adds both with no edit in fineloop; one that fails to load shows the shared pages
and leaves the CLI whole.

The families here install the way a plugin does: a module and a dist-info folder with its
`fineloop.tasks` entry points, put on the path for one test.
"""

from __future__ import annotations

import logging
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import pytest
import typer
from fastapi.testclient import TestClient
from jobs_fake_task import make_model
from typer.testing import CliRunner

from fineloop import tasks
from fineloop.cli import add_task_commands
from fineloop.cli import app as cli
from fineloop.jobs import store as jobs
from fineloop.store import Store
from fineloop.store.projects import get_project
from fineloop.web import families
from fineloop.web.routes import templates

PLUGIN = '''
"""Families of the dashboard tests: one with panels and a command, three that break."""
from pathlib import Path

from jobs_fake_task import FakeTask

from fineloop.web.families import Panels

FOLDER = Path(__file__).resolve().parent / "panel_templates"


def project_panel(session, project, page):
    return {"greeting": f"<b>hello</b> {project.name}", "page": page}


def job_panel(session, job):
    return {"kind": job.kind}


def hello(name: str) -> None:
    """Say hello from a plugin."""
    print(f"hello {name}")


class Panelled(FakeTask):
    name = "panelled"

    def panels(self):
        return Panels(FOLDER, "project.html", project_panel, "job.html", job_panel)

    def commands(self):
        return {"hello": hello, "serve": hello}  # "serve" is taken: kept by the CLI


class Broken(FakeTask):
    name = "broken"

    def panels(self):
        raise ImportError("No module named 'missing_extra'")

    def commands(self):
        raise ImportError("No module named 'missing_extra'")


def failing_panel(session, project, page):
    raise KeyError("a bug in the family's panel")


class Failing(FakeTask):
    name = "failing"

    def panels(self):
        return Panels(FOLDER, "project.html", failing_panel, "job.html", job_panel)
'''

TEMPLATES = {
    "project.html": """
        {% import "./common.html" as common %}
        {% macro top(family) %}<section id="plugin-top">{{ common.shout(family.greeting) }}
        page {{ family.page }}</section>{% endmacro %}
        {% macro after_models(family) %}<section id="plugin-after"></section>{% endmacro %}
    """,
    "job.html": """
        {% macro top(family) %}<section id="plugin-job">{{ family.kind }} run</section>
        {% endmacro %}
        {% macro bottom(family) %}{% endmacro %}
    """,
    "common.html": "{% macro shout(x) %}<em>{{ x }}</em>{% endmacro %}",
}


@pytest.fixture
def plugin(tmp_path: Path) -> Iterator[None]:
    """The test families installed (as entry points on the path) for one test."""
    folder = tmp_path / "plugin"
    (folder / "panel_templates").mkdir(parents=True)
    (folder / "web_plugin_families.py").write_text(PLUGIN)
    for name, text in TEMPLATES.items():
        (folder / "panel_templates" / name).write_text(textwrap.dedent(text))
    info = folder / "web_plugin_families-0.1.dist-info"
    info.mkdir()
    (info / "METADATA").write_text("Metadata-Version: 2.1\nName: web-plugin-families\n")
    entries = [f"{n} = web_plugin_families:{n.title()}" for n in ("panelled", "broken", "failing")]
    (info / "entry_points.txt").write_text("[fineloop.tasks]\n" + "\n".join(entries) + "\n")
    sys.path.insert(0, str(folder))
    tasks.available.cache_clear()
    families.panels_of.cache_clear()
    yield
    sys.path.remove(str(folder))
    sys.modules.pop("web_plugin_families", None)
    tasks.available.cache_clear()
    families.panels_of.cache_clear()


def create(client: TestClient, name: str, task: str, tmp_path: Path) -> None:
    base = make_model(tmp_path / f"{name}-base", 0.5)
    body = {"name": name, "task": task, "base_model": str(base)}
    created = client.post("/v1/projects", json=body)
    assert created.status_code == 201, created.text


def train_job(store: Store, name: str) -> int:
    with store.write() as session:
        job = jobs.create_job(session, get_project(session, name), "train", {}, claimed_by="t")
        return job.id


def test_a_family_panel_is_found_through_its_task(
    plugin: None, client: TestClient, store: Store, tmp_path: Path
) -> None:
    create(client, "plugged", "panelled", tmp_path)
    response = client.get("/projects/plugged?page=3")
    assert response.status_code == 200
    html = response.text
    # its template, with its own "./" import, rendered escaped with the data its task gave
    assert '<section id="plugin-top"><em>&lt;b&gt;hello&lt;/b&gt; plugged</em>' in html
    assert "page 3" in html  # the family gets the page asked for
    assert '<section id="plugin-after">' in html
    job = client.get(f"/jobs/{train_job(store, 'plugged')}")
    assert job.status_code == 200 and '<section id="plugin-job">train run</section>' in job.text


def test_a_family_that_fails_to_load_shows_the_shared_pages(
    plugin: None,
    client: TestClient,
    store: Store,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    for name, task in (("unloaded", "broken"), ("buggy", "failing")):
        create(client, name, task, tmp_path)
        with caplog.at_level(logging.ERROR, logger="fineloop.web.families"):
            page = client.get(f"/projects/{name}")
        assert page.status_code == 200, (task, page.text[:300])
        assert 'id="jobs-panel"' in page.text and "plugin-top" not in page.text
        assert f"{task!r}" in caplog.text
        caplog.clear()
    job = client.get(f"/jobs/{train_job(store, 'unloaded')}")
    assert job.status_code == 200 and "plugin-job" not in job.text


def test_family_commands_join_the_cli_and_a_broken_family_is_skipped(plugin: None) -> None:
    target = typer.Typer()
    target.command("serve")(lambda: None)
    added = add_task_commands(target)
    # generation's and the plugin's; the broken family's are skipped, "serve" stays ours
    assert {"generate", "hello"} <= set(added) and "serve" not in added
    names = [c.name for c in target.registered_commands]
    assert names.count("serve") == 1
    result = CliRunner().invoke(target, ["hello", "world"])
    assert result.exit_code == 0 and "hello world" in result.output


def test_fineloop_help_lists_the_families_commands() -> None:
    result = CliRunner().invoke(cli, ["--help"], env={"COLUMNS": "200"})
    assert result.exit_code == 0, result.output
    commands = {line.split()[1] for line in result.output.splitlines() if line.startswith("│ ")}
    assert {"generate", "extract", "serve", "train"} <= commands


def test_every_installed_familys_panels_define_what_the_pages_call() -> None:
    """A shipped family's templates load under its name and define the macros the shared
    pages call (checked without rendering, like a config validated without running it)."""
    env = templates.env  # the dashboard's own
    found = []
    for name in tasks.available():
        panels = tasks.get_task(name).panels()
        if panels is None:
            continue
        found.append(name)
        project = env.get_template(f"{name}/{panels.project_template}").module
        job = env.get_template(f"{name}/{panels.job_template}").module
        for module, macros in ((project, ("top", "after_models")), (job, ("top", "bottom"))):
            assert all(callable(getattr(module, m, None)) for m in macros), (name, macros)
        assert callable(panels.project) and callable(panels.job)
    assert {"generation", "ner"} <= set(found)
