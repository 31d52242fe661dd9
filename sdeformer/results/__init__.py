"""Results on disk: provenance, atomic files, resumable result directories, saved objects, views.

- `origin`: where a result came from (`provenance()`, `package_version()`) and a key per unit
  of a run that does not depend on list order (`fold_in_name`).
- `files`: atomic writes (`atomic_path`), JSON that refuses NaN (`write_json`, `read_json`) and
  `ResultsError`.
- `store`: `ResultStore`, a directory of results resumable unit by unit, with its manifest
  (`accepting_changed`, `config_difference`).
- `arrays`: one result object (an equinox module or a dataclass of arrays) per `.npz` file,
  without pickle (`save_arrays_module`, `load_arrays_module`, `read_arrays_header`).
- `views`: labelled `xarray` and `pandas` views of result objects (`to_xarray`, `to_dataframe`)
  and markdown tables (`markdown_table`).

Every name is importable from `sdeformer.results` itself.
"""

from __future__ import annotations

from .arrays import ARRAYS_FORMAT as ARRAYS_FORMAT
from .arrays import load_arrays_module as load_arrays_module
from .arrays import read_arrays_header as read_arrays_header
from .arrays import save_arrays_module as save_arrays_module
from .files import ResultsError as ResultsError
from .files import atomic_path as atomic_path
from .files import read_json as read_json
from .files import write_json as write_json
from .origin import fold_in_name as fold_in_name
from .origin import package_version as package_version
from .origin import provenance as provenance
from .store import MANIFEST as MANIFEST
from .store import ResultStore as ResultStore
from .store import accepting_changed as accepting_changed
from .store import config_difference as config_difference
from .views import SAMPLES_DIMS as SAMPLES_DIMS
from .views import SOLUTION_DIMS as SOLUTION_DIMS
from .views import markdown_table as markdown_table
from .views import to_dataframe as to_dataframe
from .views import to_xarray as to_xarray
