"""Pretrained encoder weights by name: what ``model.weights`` means, where the file comes from.

``model.weights`` takes one of:

- ``imagenet``: timm's default pretrained tag of the backbone (``resnet18`` ->
  ``timm:resnet18.a1_in1k``);
- ``timm:<model>.<tag>`` (or ``timm:<model>``: its default tag), any tag timm knows;
- ``https://host/path/file.pth#sha256=<64 hex digits>``: a URL with the file's SHA-256
  (a URL without it is refused: nothing unverified is loaded);
- a local ``.pt`` / ``.pth`` / ``.safetensors`` file, e.g. one inside a folder written by
  ``aerialct weights fetch``.

A named file is looked for, in order, in the folder named by ``AERIALCT_WEIGHTS_DIR``
(the layout :func:`fetch_weights` writes), in the Hugging Face hub cache (``HF_HUB_CACHE``,
``HF_HOME``; timm's weights live on the hub) or, for a URL, in torch's hub cache
(``TORCH_HOME``); only then is it downloaded, unless ``HF_HUB_OFFLINE`` is set. Without a
copy and without a network the error is one line that names the weights, the folders
searched and the ``aerialct weights fetch`` command that makes a copyable folder.

Layout of a fetched folder (copied as it is to an air-gapped machine)::

    DIR/weights.json                             the manifest: name, file, sha256, source, bytes
    DIR/timm/<model>.<tag>/model.safetensors     (or pytorch_model.bin)
    DIR/url/<stem>-<sha256[:8]><suffix>
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
import urllib.parse
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aerialct.errors import ConfigError, InputError
from aerialct.progress import ProgressFn, as_progress

log = logging.getLogger("aerialct")

ENV_DIR = "AERIALCT_WEIGHTS_DIR"
"""The environment variable naming a fetched weights folder."""
MANIFEST = "weights.json"
"""The manifest of a fetched weights folder."""
MANIFEST_FORMAT = "aerialct-weights"
HUB_FILES = ("model.safetensors", "pytorch_model.bin")
"""The files a timm repository on the hub holds, in the order timm prefers them."""
TIMEOUT_S = 10.0
"""Seconds before an unanswered request counts as failed (hub metadata and URL reads)."""
PROBE_TIMEOUT_S = 3.0
"""Seconds the first connection to the hub may take before the machine counts as offline."""
HUB_URL = "https://huggingface.co"

NO_PUBLIC_WEIGHTS = {
    "swin_ct": "the CT paper's Swin (embed 64, depths 2-2-8-2, heads 2-4-8-16) has no public "
    "pretrained weights; train it from random init (model.weights: null), or start from "
    "backbone swin_tiny_patch4_window7_224 (preset dcswin-swint) with model.weights: imagenet",
    "tiny_swin": "tiny_swin is a test-sized encoder without pretrained weights",
    "tiny_cnn": "tiny_cnn is a test-sized encoder without pretrained weights; backbone "
    "convnext_atto or regnetx_002 (preset regnetx-cpu) have them",
}
"""Backbone presets that no published weights fit, and what to do instead."""


class WeightsUnavailable(InputError):
    """Named weights are not on this machine and cannot be downloaded (offline)."""


@dataclass(frozen=True)
class WeightsSpec:
    """What a ``model.weights`` value names."""

    given: str
    """The value as written in the config (``imagenet``, ``timm:...``, a URL, a path)."""
    kind: Literal["timm", "url", "file"]
    name: str
    """Canonical name: ``timm:<model>.<tag>``, the URL with its ``#sha256=``, or the path."""
    repo_id: str | None = None
    revision: str | None = None
    url: str | None = None
    sha256: str | None = None
    path: Path | None = None

    @property
    def fetch_command(self) -> str:
        """The command that fetches these weights into a copyable folder."""
        return f"aerialct weights fetch {self.name} --out weights"

    @property
    def folder_file(self) -> str | None:
        """Where :func:`fetch_weights` puts a URL's file, relative to the folder."""
        if self.kind != "url" or self.url is None or self.sha256 is None:
            return None
        return f"url/{_url_cache_name(self.url, self.sha256)}"

    @property
    def source(self) -> str:
        """Where the file is published."""
        if self.kind == "timm":
            return f"{HUB_URL}/{self.repo_id}"
        return self.url or str(self.path)


@dataclass
class ResolvedWeights:
    """A weights file on this machine, and how it was found."""

    spec: WeightsSpec
    file: Path
    sha256: str
    found_in: str
    """``AERIALCT_WEIGHTS_DIR``, ``Hugging Face cache``, ``torch hub cache``, ``downloaded`` or
    ``local file``."""

    def record(self) -> dict[str, Any]:
        """Where the weights came from, for the checkpoint (``encoder_weights``)."""
        return {
            "given": self.spec.given,
            "name": self.spec.name,
            "source": self.spec.source,
            "file": str(self.file),
            "sha256": self.sha256,
            "found_in": self.found_in,
        }


# --------------------------------------------------------------------------- names


def _timm_spec(given: str, arch_tag: str, what: str) -> WeightsSpec:
    """``timm:<model>[.<tag>]`` -> its hub repository (ConfigError when timm has no such tag)."""
    from timm.models import get_pretrained_cfg

    try:
        cfg = get_pretrained_cfg(arch_tag)
    except RuntimeError:  # an unknown tag of a known model
        cfg = None
    if cfg is None:
        import timm

        arch = arch_tag.split(".")[0]
        close = timm.list_pretrained(f"{arch}*")[:4]
        hint = f" (timm has: {', '.join(close)})" if close else ""
        raise ConfigError(
            f"{what} {given!r}: timm has no pretrained weights named {arch_tag!r}{hint}; "
            "see timm.list_pretrained() for the names"
        )
    arch = arch_tag.split(".")[0]
    name = f"timm:{arch}.{cfg.tag}" if cfg.tag else f"timm:{arch}"
    if not cfg.hf_hub_id:
        raise ConfigError(
            f"{what} {given!r}: timm publishes {name[5:]} only at {cfg.url}, without a SHA-256 "
            f"to check; download it, check it, and give {cfg.url}#sha256=<its sha256>"
        )
    repo_id, _, revision = cfg.hf_hub_id.partition("@")
    return WeightsSpec(given, "timm", name, repo_id=repo_id, revision=revision or None)


def _url_spec(given: str, what: str) -> WeightsSpec:
    """``https://...#sha256=<hex>`` -> a URL spec (ConfigError without a valid hash)."""
    if given.startswith("http://"):
        raise ConfigError(
            f"{what} {given!r}: plain http is refused; give an https:// URL with #sha256=<hex>"
        )
    url, _, fragment = given.partition("#")
    m = re.fullmatch(r"sha256=([0-9a-fA-F]{64})", fragment)
    if not m:
        raise ConfigError(
            f"{what} {given!r}: a URL needs the file's SHA-256: write {url}#sha256=<64 hex "
            "digits> (sha256sum FILE prints it)"
        )
    sha = m.group(1).lower()
    return WeightsSpec(given, "url", f"{url}#sha256={sha}", url=url, sha256=sha)


def imagenet_name(backbone: str, backbone_kwargs: dict | None = None) -> str:
    """``timm:<model>.<tag>`` of timm's default pretrained weights for ``backbone``."""
    from aerialct.models.backbone import PRESETS, resolve_backbone

    if backbone in NO_PUBLIC_WEIGHTS:
        raise ConfigError(f"model.weights imagenet: {NO_PUBLIC_WEIGHTS[backbone]}")
    timm_name, _ = resolve_backbone(backbone, backbone_kwargs)
    if backbone not in PRESETS and backbone_kwargs:
        log.warning(
            "model.weights imagenet with model.backbone_kwargs %s: tensors whose shape these "
            "arguments change keep their random init (see the load report)",
            dict(backbone_kwargs),
        )
    return f"timm:{timm_name}"


def parse_weights(
    given: str,
    backbone: str | None = None,
    backbone_kwargs: dict | None = None,
    *,
    what: str = "model.weights",
) -> WeightsSpec:
    """What ``given`` names (see the module docstring); ``backbone`` resolves ``imagenet``."""
    text = str(given).strip()
    if text.lower() == "imagenet":
        if backbone is None:
            raise ConfigError(
                f"{what} imagenet needs a backbone; name the weights as timm:<model>.<tag>"
            )
        spec = _timm_spec(text, imagenet_name(backbone, backbone_kwargs)[5:], what)
        return WeightsSpec(text, "timm", spec.name, repo_id=spec.repo_id, revision=spec.revision)
    if text.startswith("timm:"):
        return _timm_spec(text, text[5:], what)
    if text.startswith(("https://", "http://")):
        return _url_spec(text, what)
    path = Path(text).expanduser()
    return WeightsSpec(text, "file", str(path), path=path)


# --------------------------------------------------------------------------- where files are


def hub_cache_dir() -> Path:
    """The Hugging Face hub cache, as huggingface_hub finds it (read now, not at import)."""
    env = os.environ
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(key):
            return Path(env[key]).expanduser()
    home = env.get("HF_HOME") or os.path.join(
        env.get("XDG_CACHE_HOME") or "~/.cache", "huggingface"
    )
    return Path(home).expanduser() / "hub"


def torch_cache_dir() -> Path:
    """torch's hub cache of downloaded checkpoints (``TORCH_HOME``), where timm keeps URL files."""
    import torch

    return Path(torch.hub.get_dir()) / "checkpoints"


def hub_offline() -> bool:
    """True when ``HF_HUB_OFFLINE`` is set (read now, as huggingface_hub reads it)."""
    return os.environ.get("HF_HUB_OFFLINE", "").strip().upper() in ("1", "ON", "YES", "TRUE")


def weights_dir() -> Path | None:
    """The fetched folder named by ``AERIALCT_WEIGHTS_DIR``, or None."""
    value = os.environ.get(ENV_DIR, "").strip()
    return Path(value).expanduser() if value else None


def folder_files(spec: WeightsSpec) -> list[str]:
    """The files of ``spec`` inside a fetched folder, relative to it, most preferred first."""
    if spec.kind == "timm":
        return [f"timm/{spec.name[5:]}/{f}" for f in HUB_FILES]
    return [spec.folder_file] if spec.folder_file else []


def _url_cache_name(url: str, sha256: str) -> str:
    """``<stem>-<sha256[:8]><suffix>``: torch hub's naming, so the name tells the content."""
    base = Path(urllib.parse.urlparse(url).path).name or "weights.pth"
    base = re.sub(r"[^A-Za-z0-9._-]", "_", base)
    stem, dot, suffix = base.partition(".")
    if stem.endswith(f"-{sha256[:8]}"):
        return base
    return f"{stem}-{sha256[:8]}{dot}{suffix}"


def file_sha256(path: Path) -> str:
    """The SHA-256 of a file, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()


# --------------------------------------------------------------------------- resolving


def resolve_weights(
    given: str | WeightsSpec,
    backbone: str | None = None,
    backbone_kwargs: dict | None = None,
    *,
    progress: ProgressFn | None = None,
) -> ResolvedWeights:
    """The file ``given`` names on this machine, downloading it when allowed and needed."""
    spec = (
        given if isinstance(given, WeightsSpec) else parse_weights(given, backbone, backbone_kwargs)
    )
    if spec.kind == "file":
        return _local_file(spec)
    found = _find_copy(spec)
    if found is not None:
        return found
    searched = _searched(spec)
    if hub_offline():
        raise _unavailable(spec, searched, "the hub is offline (HF_HUB_OFFLINE=1)")
    download = _download_hub if spec.kind == "timm" else _download_url
    file = download(spec, searched, progress)
    log.info("weights %s downloaded to %s", spec.name, file)
    return ResolvedWeights(spec, file, spec.sha256 or file_sha256(file), "downloaded")


def _searched(spec: WeightsSpec) -> list[str]:
    """The folders looked in, as the offline message names them."""
    out = []
    env = weights_dir()
    if env is not None:
        out.append(f"{ENV_DIR} {env}")
    if spec.kind == "timm":
        out.append(f"the Hugging Face cache {hub_cache_dir()}")
    else:
        out.append(f"the torch hub cache {torch_cache_dir()}")
    return out


def _unavailable(spec: WeightsSpec, searched: list[str], why: str) -> WeightsUnavailable:
    """The one-line offline error: the weights, the folders searched, the fetch command."""
    named = spec.name if spec.given == spec.name else f"{spec.name} (model.weights {spec.given})"
    return WeightsUnavailable(
        f"weights {named} are not on this machine: searched {' and '.join(searched)}; {why}. "
        f"On a connected machine run `{spec.fetch_command}`, copy the weights folder here "
        f"and set {ENV_DIR} to it"
    )


def _find_copy(spec: WeightsSpec) -> ResolvedWeights | None:
    """A copy in ``AERIALCT_WEIGHTS_DIR``, the hub cache or torch's cache, checked; or None."""
    env = weights_dir()
    if env is not None:
        for rel in folder_files(spec):
            if (env / rel).is_file():
                return ResolvedWeights(spec, env / rel, _checked_sha(env / rel, spec), ENV_DIR)
    if spec.kind == "timm":
        from huggingface_hub import try_to_load_from_cache

        assert spec.repo_id is not None
        for name in HUB_FILES:
            hit = try_to_load_from_cache(
                spec.repo_id, name, cache_dir=hub_cache_dir(), revision=spec.revision
            )
            if isinstance(hit, str) and Path(hit).is_file():
                return ResolvedWeights(
                    spec, Path(hit), file_sha256(Path(hit)), "Hugging Face cache"
                )
        return None
    assert spec.url is not None and spec.sha256 is not None
    cached = torch_cache_dir() / _url_cache_name(spec.url, spec.sha256)
    if cached.is_file() and file_sha256(cached) == spec.sha256:
        return ResolvedWeights(spec, cached, spec.sha256, "torch hub cache")
    return None


def _checked_sha(path: Path, spec: WeightsSpec) -> str:
    """The file's SHA-256; InputError when it differs from the one ``spec`` or a manifest gives."""
    sha = file_sha256(path)
    expected = spec.sha256 or _manifest_sha(path)
    if expected and sha != expected:
        raise InputError(
            f"{path}: sha256 {sha[:12]}... but {expected[:12]}... was expected for "
            f"{spec.name}; the copy is damaged: fetch it again (`{spec.fetch_command}`)"
        )
    return sha


def _manifest_sha(path: Path) -> str | None:
    """The SHA-256 that a fetched folder's manifest gives for ``path`` (None: not in one)."""
    entry = manifest_entry(path)
    return entry.get("sha256") if entry else None


def manifest_entry(path: Path) -> dict | None:
    """The manifest entry of ``path`` when it lies in a fetched folder (up to 3 levels up)."""
    path = path.resolve()
    for parent in list(path.parents)[:3]:
        man = parent / MANIFEST
        if man.is_file():
            try:
                doc = json.loads(man.read_text())
            except (OSError, ValueError):
                return None
            if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
                return None
            rel = path.relative_to(parent).as_posix()
            for entry in doc.get("weights", []):
                if isinstance(entry, dict) and entry.get("file") == rel:
                    return entry
            return None
    return None


def _local_file(spec: WeightsSpec) -> ResolvedWeights:
    """A local file: checked to exist (a fetched folder's copy is also checked by its hash)."""
    assert spec.path is not None
    p = spec.path
    if p.is_dir():
        hint = (
            f"set {ENV_DIR}={p} and name the weights (imagenet, timm:<model>.<tag>), or give "
            "a file inside it"
            if (p / MANIFEST).is_file()
            else "give a .pt/.pth/.safetensors file"
        )
        raise InputError(f"{p}: model.weights is a folder; {hint}")
    if not p.is_file():
        raise InputError(
            f"{p}: weights file not found; give a local .pt/.pth/.safetensors file{_name_hint(spec.given)}"
        )
    entry = manifest_entry(p)
    if entry is not None:
        named = WeightsSpec(
            spec.given, "file", str(entry.get("name") or p), path=p,
            url=entry.get("source"),
        )  # fmt: skip
        return ResolvedWeights(named, p, _checked_sha(p, named), "local file")
    return ResolvedWeights(spec, p, file_sha256(p), "local file")


def _name_hint(given: str) -> str:
    """`` (did you mean timm:<given>?)`` when ``given`` is a timm pretrained name."""
    if os.sep in given or given.endswith((".pt", ".pth", ".safetensors", ".bin")):
        return ""
    from timm.models import get_pretrained_cfg

    try:
        known = get_pretrained_cfg(given) is not None
    except RuntimeError:
        known = False
    return f", or name timm's weights: timm:{given}" if known else ""


# --------------------------------------------------------------------------- downloading


def _tqdm_to(progress: ProgressFn, description: str) -> type:
    """A tqdm class that draws nothing and reports bytes to ``progress``."""
    from tqdm.auto import tqdm

    class _Report(tqdm):  # type: ignore[misc,type-arg]
        def __init__(self, *args: Any, **kwargs: Any) -> None:
            kwargs["disable"] = True
            super().__init__(*args, **kwargs)
            total = kwargs.get("total")
            progress(int(kwargs.get("initial") or 0), total=int(total) if total else None,
                     description=description)  # fmt: skip

        def update(self, n: float | None = 1) -> bool | None:
            progress(int(n or 0))
            return None

    return _Report


def hub_download(repo_id: str, filename: str, *, revision: str | None, tqdm_class: type) -> str:
    """One file of a hub repository into the hub cache (huggingface_hub does the work)."""
    from huggingface_hub import hf_hub_download

    return str(
        hf_hub_download(
            repo_id,
            filename,
            revision=revision,
            cache_dir=hub_cache_dir(),
            etag_timeout=TIMEOUT_S,
            tqdm_class=tqdm_class,
            library_name="aerialct",
        )
    )


def probe(url: str, timeout: float = PROBE_TIMEOUT_S) -> str | None:
    """Why ``url``'s host (or the https proxy) takes no connection within ``timeout``; None
    when it does. One quick attempt, so that a machine without network is told at once
    instead of after huggingface_hub's retries (about 20 s per file)."""
    import socket
    import urllib.request

    proxy = urllib.request.getproxies().get("https")
    target = urllib.parse.urlparse(proxy if proxy else url)
    host, port = target.hostname, target.port or (443 if target.scheme == "https" else 80)
    if not host:
        return None
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return None
    except OSError as e:
        return f"{host}:{port}: {_reason(e)}"


def _download_hub(spec: WeightsSpec, searched: list[str], progress: ProgressFn | None) -> Path:
    """The repository's weights file, safetensors first (as timm does)."""
    from huggingface_hub.errors import EntryNotFoundError, LocalEntryNotFoundError

    assert spec.repo_id is not None
    endpoint = os.environ.get("HF_ENDPOINT") or HUB_URL
    down = probe(endpoint)
    if down is not None:
        raise _unavailable(spec, searched, f"the hub cannot be reached ({down})")
    bar = _tqdm_to(as_progress(progress), f"downloading {spec.name}")
    log.info("downloading %s from %s/%s", spec.name, endpoint, spec.repo_id)
    for i, name in enumerate(HUB_FILES):
        try:
            return Path(hub_download(spec.repo_id, name, revision=spec.revision, tqdm_class=bar))
        except LocalEntryNotFoundError as e:  # the hub's "not cached and not reachable"
            raise _unavailable(spec, searched, _hub_failure(e)) from e
        except EntryNotFoundError:
            if i == len(HUB_FILES) - 1:
                raise InputError(
                    f"weights {spec.name}: {HUB_URL}/{spec.repo_id} holds none of "
                    f"{', '.join(HUB_FILES)}; name other weights"
                ) from None
        except Exception as e:  # no network, DNS, proxy, timeout: one line, never a traceback
            raise _unavailable(spec, searched, _hub_failure(e)) from e
    raise AssertionError("unreachable")


def _hub_failure(e: BaseException) -> str:
    """Why the hub gave nothing: it answered with an error, or it could not be reached."""
    from huggingface_hub.errors import HfHubHTTPError

    response = getattr(e, "response", None)
    status = getattr(response, "status_code", None)
    if isinstance(e, HfHubHTTPError) and status is not None:
        return f"the hub answered HTTP {status} ({_reason(e)})"
    return f"the hub cannot be reached ({_reason(e)})"


def _reason(e: BaseException) -> str:
    """A short cause for the offline line: the exception's name and its first words."""
    text = " ".join(str(e).split())[:80]
    return f"{type(e).__name__}: {text}" if text else type(e).__name__


def url_download(url: str, dest: Path, progress: ProgressFn) -> None:
    """GET ``url`` into ``dest`` with a timeout, reporting bytes to ``progress``."""
    import urllib.request

    req = urllib.request.Request(url, headers={"User-Agent": "aerialct"})
    with urllib.request.urlopen(req, timeout=TIMEOUT_S) as r, open(dest, "wb") as f:
        total = r.headers.get("Content-Length")
        progress(0, total=int(total) if total else None, description=f"downloading {dest.name}")
        while block := r.read(1 << 20):
            f.write(block)
            progress(len(block))


def _download_url(spec: WeightsSpec, searched: list[str], progress: ProgressFn | None) -> Path:
    """A URL's file into torch's hub cache, its SHA-256 checked before it gets its name."""
    from aerialct.geo.outputs import atomic_output

    assert spec.url is not None and spec.sha256 is not None
    final = torch_cache_dir() / _url_cache_name(spec.url, spec.sha256)
    down = probe(spec.url)
    if down is not None:
        raise _unavailable(spec, searched, f"{spec.url} cannot be reached ({down})")
    log.info("downloading %s to %s", spec.url, final)
    with atomic_output(final, overwrite=True) as tmp:
        try:
            url_download(spec.url, tmp, as_progress(progress))
        except OSError as e:  # URLError, timeouts, refused connections are OSErrors
            raise _unavailable(
                spec, searched, f"{spec.url} cannot be reached ({_reason(e)})"
            ) from e
        got = file_sha256(tmp)
        if got != spec.sha256:
            raise InputError(
                f"{spec.url}: the file served has sha256 {got}, not {spec.sha256}; the URL serves "
                "other content than the hash names: check both"
            )
    return final


# --------------------------------------------------------------------------- fetch folder


@dataclass
class FetchedWeights:
    """One entry of a fetched folder."""

    name: str
    file: str
    """Relative to the folder."""
    sha256: str
    bytes: int
    source: str
    found_in: str
    """Where the copy came from (``downloaded``, ``Hugging Face cache``, ...), or ``already there``."""


@dataclass
class FetchResult:
    """What ``aerialct weights fetch`` did (rendered by the CLI)."""

    out: Path
    weights: list[FetchedWeights] = field(default_factory=list)
    env_var: str = ENV_DIR
    """The environment variable that makes training use the folder."""


def spec_to_fetch(name: str) -> WeightsSpec:
    """A fetch argument -> what it names: ``timm:...``, a timm pretrained name, a URL, or a
    config preset / YAML whose ``model.weights`` names weights."""
    if name.startswith(("timm:", "https://", "http://")):
        return parse_weights(name, what="weights")
    from timm.models import get_pretrained_cfg

    try:
        is_timm = get_pretrained_cfg(name) is not None
    except RuntimeError:
        is_timm = False
    if is_timm:
        return parse_weights(f"timm:{name}", what="weights")
    from aerialct.config import load_config, resolve_config_path

    try:
        cfg = load_config(resolve_config_path(name))
    except ConfigError as e:
        raise ConfigError(
            f"weights {name!r}: not timm:<model>.<tag>, a timm pretrained name, an https URL "
            f"with #sha256=, nor a config ({str(e).split(';')[0]})"
        ) from None
    mc = cfg.model
    if not mc.weights:
        raise ConfigError(
            f"weights {name!r}: config {cfg.name} trains from random init (model.weights is "
            "null); nothing to fetch"
        )
    spec = parse_weights(mc.weights, mc.backbone, mc.backbone_kwargs)
    if spec.kind == "file":
        raise ConfigError(f"weights {name!r}: config {cfg.name} names a local file, {spec.path}")
    return spec


def _read_manifest(out: Path) -> dict[str, dict]:
    """The folder's manifest entries by name (empty for a new folder)."""
    man = out / MANIFEST
    if not man.is_file():
        return {}
    try:
        doc = json.loads(man.read_text())
    except (OSError, ValueError) as e:
        raise InputError(f"{man}: not a weights manifest ({e}); give another --out") from e
    if not isinstance(doc, dict) or doc.get("format") != MANIFEST_FORMAT:
        raise InputError(f"{man}: not an aerialct weights manifest; give another --out")
    return {e["name"]: e for e in doc.get("weights", []) if isinstance(e, dict) and "name" in e}


def _check_fetch_folder(out: Path) -> None:
    """A new or empty folder, or one ``weights fetch`` made; anything else is refused."""
    if out.exists() and not out.is_dir():
        raise InputError(f"{out}: exists and is not a folder; give a folder for --out")
    if out.is_dir() and any(out.iterdir()) and not (out / MANIFEST).is_file():
        raise InputError(
            f"{out}: a folder without {MANIFEST}, not made by `aerialct weights fetch`; give a "
            "new or empty folder, or one that command made"
        )


def fetch_weights(
    names: Sequence[str],
    out: str | os.PathLike,
    *,
    progress: ProgressFn | None = None,
) -> FetchResult:
    """Copy the named weights into ``out`` (a folder to carry to an air-gapped machine).

    Each name is found as training would find it (cache, or download) and copied under
    the layout of the module docstring, its SHA-256 checked; ``weights.json`` lists them.
    A name already in the folder with the same SHA-256 is kept.
    """
    from aerialct.geo.outputs import atomic_output

    folder = Path(out)
    _check_fetch_folder(folder)
    specs = [spec_to_fetch(n) for n in names]  # every name checked before any download
    entries = _read_manifest(folder)
    result = FetchResult(out=folder)
    for spec in specs:
        resolved = resolve_weights(spec, progress=progress)
        rel = _folder_file_for(spec, resolved.file)
        dest = folder / rel
        old = entries.get(spec.name)
        kept = old is not None and old.get("sha256") == resolved.sha256 and dest.is_file()
        if old is not None and kept and file_sha256(dest) == resolved.sha256:
            result.weights.append(FetchedWeights(**{**old, "found_in": "already there"}))
            continue
        with atomic_output(dest, overwrite=True) as tmp:
            shutil.copyfile(resolved.file, tmp)
            if file_sha256(tmp) != resolved.sha256:
                raise InputError(f"{dest}: the copy differs from {resolved.file}; run again")
        entry = FetchedWeights(
            name=spec.name, file=rel, sha256=resolved.sha256, bytes=dest.stat().st_size,
            source=spec.source, found_in=resolved.found_in,
        )  # fmt: skip
        entries[spec.name] = {k: v for k, v in vars(entry).items() if k != "found_in"}
        _write_manifest(folder, entries)
        result.weights.append(entry)
    if not (folder / MANIFEST).exists():
        _write_manifest(folder, entries)
    return result


def _folder_file_for(spec: WeightsSpec, file: Path) -> str:
    """The relative path of ``spec``'s copy in a fetched folder (keeps the hub file's name)."""
    if spec.kind == "timm":
        name = file.name if file.name in HUB_FILES else HUB_FILES[0]
        return f"timm/{spec.name[5:]}/{name}"
    assert spec.folder_file is not None
    return spec.folder_file


def _write_manifest(folder: Path, entries: dict[str, dict]) -> None:
    from aerialct import __version__
    from aerialct.geo.outputs import atomic_output

    doc = {
        "format": MANIFEST_FORMAT,
        "version": 1,
        "aerialct_version": __version__,
        "weights": sorted(entries.values(), key=lambda e: e["name"]),
    }
    with atomic_output(folder / MANIFEST, overwrite=True) as tmp:
        tmp.write_text(json.dumps(doc, indent=2) + "\n")


__all__ = [
    "ENV_DIR",
    "NO_PUBLIC_WEIGHTS",
    "FetchResult",
    "FetchedWeights",
    "ResolvedWeights",
    "WeightsSpec",
    "WeightsUnavailable",
    "fetch_weights",
    "hub_cache_dir",
    "parse_weights",
    "resolve_weights",
]
