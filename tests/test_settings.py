from __future__ import annotations

import pytest

from core.settings import SettingsError, load


def test_precedence_types_and_errors(tmp_path):
    cfg = tmp_path / "c.toml"
    cfg.write_text('chunk_mb = 8\nhost_registries = {"docker.m.example.io" = "docker.io"}\nbreaker_share = 1\n')
    s = load(str(cfg), {}, environ={"PULLWARDEN_CHUNK_MB": "16", "PULLWARDEN_TRUSTED_PROXIES": "10.0.0.0/8, 10.1.0.0/16",
                                    "PULLWARDEN_HOSTING_ASNS": "16509,45102"})
    assert (s.chunk_mb, s.origin["chunk_mb"]) == (16, "PULLWARDEN_CHUNK_MB")
    assert s.host_registries == {"docker.m.example.io": "docker.io"} and s.breaker_share == 1.0
    assert s.trusted_proxies == ["10.0.0.0/8", "10.1.0.0/16"] and s.hosting_asns == [16509, 45102]
    s = load(str(cfg), {"chunk_mb": 4}, environ={"PULLWARDEN_HOST_REGISTRIES": '{"a.example": "quay.io"}'})
    assert s.chunk_mb == 4 and s.host_registries == {"a.example": "quay.io"}
    with pytest.raises(SettingsError, match="PULLWARDEN_HOST_REGISTRIES: host_registries: not a registry host name: 1"):
        load(None, {}, environ={"PULLWARDEN_HOST_REGISTRIES": '{"a.example": 1}'})
    with pytest.raises(SettingsError, match="host_registries must be a dict"):
        load(None, {}, environ={"PULLWARDEN_HOST_REGISTRIES": "[1]"})
    with pytest.raises(SettingsError, match="not a JSON object"):
        load(None, {}, environ={"PULLWARDEN_HOST_REGISTRIES": "{oops"})
    with pytest.raises(SettingsError, match="chunk_mb must be a int"):
        load(None, {}, environ={"PULLWARDEN_CHUNK_MB": "lots"})
    cfg.write_text('port = "eighty"\n')
    with pytest.raises(SettingsError, match=r"c.toml:1: port must be a int"):
        load(str(cfg), {}, environ={})
    cfg.write_text("port = \n")
    with pytest.raises(SettingsError, match="c.toml"):
        load(str(cfg), {}, environ={})
    with pytest.raises(SettingsError, match="config file not found"):
        load(str(tmp_path / "nope.toml"), {}, environ={})


def test_a_registry_host_that_is_not_a_host_name_is_refused_with_its_line(tmp_path):
    """default_registry and host_registries are written into nginx's include: a value that is not
    a host name is refused where it was written, and names are kept lower-case without a trailing dot."""
    cfg = tmp_path / "pullwarden.toml"
    cfg.write_text('chunk_mb = 8\nhost_registries = {"gcr.m.example" = "gcr.io\\"; }"}\n')
    with pytest.raises(SettingsError, match=r"pullwarden.toml:2: host_registries: not a registry host name"):
        load(str(cfg), environ={})
    cfg.write_text('default_registry = "Docker.IO."\nhost_registries = {"GCR.M.example" = "gcr.io"}\n')
    s = load(str(cfg), environ={})
    assert s.default_registry == "docker.io" and s.host_registries == {"gcr.m.example": "gcr.io"}
