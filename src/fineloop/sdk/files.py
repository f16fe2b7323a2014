"""The file calls of `Client`: import a JSONL/CSV/Parquet/OASST file, export one."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, overload

from fineloop.sdk.transport import Transport, error_of, project_path

Resource = Literal["items", "interactions", "feedback"]
_SUFFIXES = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".csv": "csv",
    ".parquet": "parquet",
    ".pq": "parquet",
}


class FileCalls:
    _t: Transport

    def import_file(
        self, project: str, resource: Resource, path: str | Path, format: str | None = None
    ) -> list[dict[str, Any]]:
        """Send a JSONL, CSV or Parquet file (format from the suffix unless given), or an
        Open-Assistant tree file with format="oasst". All rows are stored, or none (422,
        naming the bad lines). Answers one report (rows, created, duplicates) per resource."""
        path = Path(path)
        fmt = format or _SUFFIXES.get(path.suffix.lower())
        if fmt is None:
            raise ValueError(
                f"cannot tell the format of {path.name}; pass format= (jsonl, csv, parquet, oasst)"
            )
        return self._t.array(
            "POST",
            f"{project_path(project)}/import/{resource}",
            upload=path,
            params={"format": fmt},
        )

    @overload
    def export(
        self, project: str, resource: Resource, format: str = ..., path: None = None
    ) -> bytes: ...

    @overload
    def export(self, project: str, resource: Resource, format: str, path: str | Path) -> Path: ...

    @overload
    def export(
        self, project: str, resource: Resource, format: str = ..., *, path: str | Path
    ) -> Path: ...

    def export(
        self,
        project: str,
        resource: Resource,
        format: str = "jsonl",
        path: str | Path | None = None,
    ) -> bytes | Path:
        """The resource's rows as a JSONL, CSV or Parquet file: returned as bytes, or
        streamed to `path` (which is returned)."""
        url = f"{project_path(project)}/export/{resource}"
        params = {"format": format}

        def download() -> bytes | Path:
            with self._t.http.stream("GET", url, params=params) as response:
                if response.is_error:
                    response.read()
                    raise error_of(response)
                if path is None:
                    return response.read()
                # Written aside and renamed, so `path` never holds half a file.
                target = Path(path)
                target.parent.mkdir(parents=True, exist_ok=True)
                partial = target.with_name(target.name + ".part")
                with partial.open("wb") as handle:
                    for chunk in response.iter_bytes():
                        handle.write(chunk)
                return partial.replace(target)

        return self._t.retrying(download, idempotent=True)
