"""MovieLens adapter: the official '::' layout (ISO-8859-1) and the reconstructed CSV's unknown rows."""

from __future__ import annotations

from pathlib import Path

import pytest

from onerec.data import DataConfig
from onerec.data.adapters.movielens import read
from onerec.io import OnerecError


def _folder(tmp_path: Path, ratings_csv: str | None = None) -> Path:
    folder = tmp_path / "ml"
    folder.mkdir(parents=True)
    (folder / "movies.dat").write_bytes("1::Star Wars: Episode IV (1977)::Action|Sci-Fi\n2::Am\xe9lie (2001)::Comedy\n"
                                        .encode("latin-1"))
    (folder / "users.dat").write_text("1::F::1::10::48067\n2::M::56::16::70072\n")
    if ratings_csv is None:
        (folder / "ratings.dat").write_text("1::1::5::978300760\n1::2::3::978302109\n2::1::4::978301968\n")
    else:
        (folder / "ratings_reconstructed.csv").write_text(ratings_csv)
    return folder


def test_official_layout(tmp_path: Path) -> None:
    """'::' fields split right even when a title has ':'; latin-1 decodes; seconds become ms."""
    raw = read(DataConfig(source="movielens"), _folder(tmp_path))
    titles = raw.items["title"].to_list()
    assert titles == ["Star Wars: Episode IV (1977)", "Amélie (2001)"], titles
    assert raw.items["year"].to_list() == [1977, 2001] and raw.items["genres"][0].to_list() == ["Action", "Sci-Fi"]
    assert raw.interactions["ts_ms"].to_list() == [978300760000, 978302109000, 978301968000]
    assert raw.users["age"].to_list() == [1, 56], raw.users


def test_unknown_rows_dropped_or_negative(tmp_path: Path) -> None:
    """Rows with rating -1 / timestamp -1 are dropped (counted), or kept unrated at 975768738 s."""
    csv = "user_id,movie_id,rating,timestamp,split\n1,1,5,978300760,test\n1,2,-1,-1,train\n2,1,4,978301968,val\n"
    dropped = read(DataConfig(source="movielens"), _folder(tmp_path, csv))
    assert dropped.interactions.height == 2 and dropped.notes["unknown_rating_rows"] == 1, dropped.notes
    kept = read(DataConfig(source="movielens", movielens_unknown="negative"), _folder(tmp_path / "k", csv))
    row = kept.interactions.filter(kept.interactions["item_orig"] == 2)
    assert row["rating"].to_list() == [None] and row["ts_ms"].to_list() == [975768738000], row


def test_rating_out_of_range(tmp_path: Path) -> None:
    """A rating outside 0.5..5 is an error naming the column."""
    csv = "user_id,movie_id,rating,timestamp\n1,1,9,978300760\n"
    with pytest.raises(OnerecError, match="'rating' has 1 rows"):
        read(DataConfig(source="movielens"), _folder(tmp_path / "k", csv))
