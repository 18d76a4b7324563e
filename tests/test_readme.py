"""The README's commands name modules that exist and configs that load, so a newcomer who copies one gets
the job it describes, not an import error or a missing file."""

from __future__ import annotations

import importlib.util
import re
import shlex
import tempfile
from pathlib import Path

import pytest

from tests.test_cluster import check_entrypoint

README = Path(__file__).resolve().parents[1] / "README.md"
JOB_MODULES = re.compile(r"ray_jobs\.(preprocess|evaluate|train_\w+)$")


def readme_commands() -> list[str]:
    """``python -m MODULE ...`` of every bash block of the README, one per command, continuations joined."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", README.read_text(), re.S):
        for line in block.replace("\\\n", " ").splitlines():
            commands += [m.group(0).strip() for m in re.finditer(r"python -m [\w.]+[^;&|#]*", line)]
    return commands


def test_the_readme_shows_every_job():
    modules = {shlex.split(c)[2] for c in readme_commands()}
    wanted = {"ray_jobs.preprocess", "ray_jobs.train_stage1", "ray_jobs.train_stage2", "ray_jobs.train_audio",
              "ray_jobs.train_stage3", "ray_jobs.export_bundle", "ray_jobs.evaluate"}  # fmt: skip
    assert wanted <= modules, sorted(wanted - modules)


def check_written_config(name: str, module: str) -> None:
    """The config ``cat > NAME <<EOF ... EOF`` writes in the README loads into the job's config."""
    from fet.config import load_config
    from fet.data.preprocess import PreprocessConfig

    written = re.search(rf"cat > {re.escape(name)} <<EOF\n(.*?)\nEOF\n", README.read_text(), re.S)
    assert written, f"{name}: the README names this config but no block writes it"
    assert module == "ray_jobs.preprocess", f"{module}: only the preprocessing config is written by the README"
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "written.yaml"
        path.write_text(re.sub(r"\$\w+", "/data", written.group(1)))
        cfg = load_config(PreprocessConfig, path)
    cfg.validate()


@pytest.mark.parametrize("command", readme_commands())
def test_readme_command_names_a_module_and_a_config_that_exist(command):
    argv = shlex.split(command)
    module = argv[2]
    if JOB_MODULES.search(module):
        from ray_jobs.common import parse_args

        parse_args(module, "", "", argv[3:])  # overrides after --config are taken
        if "$" in argv[argv.index("--config") + 1]:  # a config the README's block writes first (a heredoc)
            check_written_config(argv[argv.index("--config") + 1], module)
            return
        check_entrypoint(command)  # the config loads into that job's config and names its stage
        return
    assert importlib.util.find_spec(module) is not None, f"{module}: no such module"
    if "--config" in argv:
        config = README.parent / argv[argv.index("--config") + 1]
        assert config.is_file(), f"{command}: {config} is missing"
    if module == "fet.train":  # parsed as the command parses it: overrides after --config, keys that exist
        from fet.train import parse

        parse([a.replace("configs/", str(README.parent / "configs") + "/", 1) for a in argv[3:]])


@pytest.mark.parametrize("page", [README, *sorted((README.parent / "docs").glob("*.md"))], ids=lambda p: p.name)
def test_links_to_files_of_the_repository_resolve(page):
    """The README sends readers to docs/ for the measured runs, and those pages link to each other; a
    page moved or renamed would leave a dead link."""
    targets = re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text())
    local = [t for t in targets if "://" not in t]
    missing = [t for t in local if not (page.parent / t).exists()]
    assert not missing, f"{page.name} links to files that do not exist: {missing}"
