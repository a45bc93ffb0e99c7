"""Settings are declared once (core/settings.py); each must be documented in the README."""
from pathlib import Path

from core.settings import SETTINGS

README = (Path(__file__).resolve().parents[1] / "README.md").read_text()


def test_every_setting_is_documented():
    missing = [s.name for s in SETTINGS if f"| `{s.name}` |" not in README]
    assert missing == []


def test_readme_test_command_is_what_ci_runs():
    ci = (Path(__file__).resolve().parents[1] / ".ci" / "run").read_text()
    command = "(dpkg -s nginx-light chromium chromium-driver libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core docker-registry skopeo curl >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y nginx-light chromium chromium-driver libpango-1.0-0 libpangoft2-1.0-0 libharfbuzz-subset0 fonts-dejavu-core docker-registry skopeo curl)) && pip install -e '.[test]' && python -m pytest"
    assert command in README and command in ci


def test_the_deployment_sections_show_what_the_code_generates():
    from enforcer.render import deployment
    for name, text in deployment().items():
        assert text in README, name
