"""csvfile.py, the one CSV reader behind data.read_csv (training data) and predict.read_inputs
(predict.py's input_csv): every row is read or rejected by name, and nothing changes on the way in.

Each table runs through both readers: a plain numeric file takes numpy's fast path, a quoted one
the csv module's, and the two must agree with each other and with the text.
"""

from __future__ import annotations

import random

import pytest
import torch

from backprop_lab.data import DataError, read_csv
from backprop_lab.errors import BackpropLabError
from backprop_lab.tools.predict import read_inputs


def read_data(path, dtype=torch.float32) -> list[list[float]]:
    x, y = read_csv(path, ["x"], ["y"], dtype=dtype)
    assert x.dtype == y.dtype == dtype
    return torch.cat([x, y], dim=1).tolist()


def read_predict_inputs(path) -> list[list[float]]:
    rows, records = read_inputs(path, ["x", "y"])
    assert len(records) == len(rows)
    return rows


#: name: (read the x and y columns, the error it raises, what its messages call the file, the
#: setting that names the file)
READERS = {
    "read_csv": (read_data, DataError, "data file", "data.train_csv"),
    "read_inputs": (read_predict_inputs, BackpropLabError, "input file", "input_csv"),
}

#: (file bytes, the x and y values read). The values are exact in float32 as in float64.
GOOD = {
    "plain": (b"x,y\n1,2\n3,4\n", [[1.0, 2.0], [3.0, 4.0]]),
    "byte-order mark": ("\ufeffx,y\n1,2\n".encode(), [[1.0, 2.0]]),
    "quoted numbers": (b'"x","y"\n"1.5","-2"\n', [[1.5, -2.0]]),
    "quoted comma in a text column": (b'name,x,y\n"a, b",1,2\n', [[1.0, 2.0]]),
    "# in a text column is data": (
        b"name,x,y\n#1,1,2\n#2,3,4\n#3,5,6\n",
        [[1.0, 2.0], [3.0, 4.0], [5.0, 6.0]],
    ),
    "CRLF line ends": (b"x,y\r\n1,2\r\n3,4\r\n", [[1.0, 2.0], [3.0, 4.0]]),
    "empty lines are skipped": (b"\nx,y\n\n1,2\n\n3,4\n\n", [[1.0, 2.0], [3.0, 4.0]]),
    "spaces around numbers and names": (b" x , y \n 1.5 , 2\n", [[1.5, 2.0]]),
    "columns in any order": (b"y,x\n2,1\n", [[1.0, 2.0]]),
    "unused columns may hold anything": (b"x,y,z,big\n1,2,nan,1e39\n", [[1.0, 2.0]]),
}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("raw", GOOD.values(), ids=GOOD)
def test_reads_every_row_as_written(tmp_path, reader, raw):
    text, expected = raw
    path = tmp_path / "d.csv"
    path.write_bytes(text)
    read = READERS[reader][0]
    assert read(path) == expected


@pytest.mark.parametrize("quoted", [False, True], ids=["numpy path", "csv module path"])
def test_values_arrive_unchanged(tmp_path, quoted):
    rng = random.Random(0)
    rows = [[rng.uniform(-1e6, 1e6), rng.gauss(0.0, 1e-3)] for _ in range(500)]
    q = '"' if quoted else ""
    path = tmp_path / "d.csv"
    path.write_text("x,y\n" + "".join(f"{q}{a!r}{q},{q}{b!r}{q}\n" for a, b in rows))
    assert read_data(path, torch.float64) == rows
    assert read_predict_inputs(path) == rows
    assert read_data(path) == torch.tensor(rows, dtype=torch.float32).tolist()


#: (file bytes, words of the message). Every message also names the file.
BAD = {
    "not UTF-8": (
        b"x,y\n1,\xff\n",
        ["is not UTF-8 text", "byte 0xff at row 2", "save it as UTF-8"],
    ),
    "latin-1": ("x,y\n1,\xe9\n".encode("latin-1"), ["not UTF-8", "byte 0xe9 at row 2"]),
    "UTF-16": ("x,y\n1,2\n".encode("utf-16"), ["not UTF-8", "UTF-16", "save it as UTF-8"]),
    "UTF-16 without a byte-order mark": (
        "x,y\n1,2\n".encode("utf-16-le"),
        ["not UTF-8", "NUL byte at row 1", "UTF-16"],
    ),
    "a # row is data": (b"x,y\n1,2\n#3,4\n", ["row 3", "column 'x'", "'#3' is not a number"]),
    "a # comment line is a row": (
        b"x,y\n# a comment\n1,2\n",
        ["row 2", "1 field(s), but the header has 2", "no comment"],
    ),
    "duplicate column": (b"x,y,x\n1,2,3\n", ["duplicate column name(s) ['x']"]),
    "duplicate column after stripping": (b"x, x,y\n1,2,3\n", ["duplicate column name(s) ['x']"]),
    "empty cell": (b"x,y\n1,\n", ["row 2", "column 'y' is empty"]),
    "row of empty cells": (b"x,y\n1,2\n,\n", ["row 3", "column 'x' is empty"]),
    "a line of spaces is a row": (b"x,y\n1,2\n \n", ["row 3", "1 field(s)"]),
    "unclosed quote": (b'x,y\n1,"2\n3,4\n', ["row 2", "quotes"]),
    "stray quote": (b'x,y\n"1"5,2\n', ["row 2", "quotes"]),
    "rows count skipped lines": (b"x,y\n1,2\n\n3,two\n", ["row 4", "'two' is not a number"]),
    "empty": (b"", ["is empty"]),
    "only empty lines": (b"\n\r\n\n", ["is empty"]),
    "header only": (b"x,y\n\n", ["header but no data rows"]),
    "ragged": (b"x,y\n1,2\n2,4,6\n", ["row 3", "3 field(s), but the header has 2"]),
    "missing column": (b"a,b\n1,2\n", ["no column(s)", "its columns are ['a', 'b']"]),
    "nan": (b"x,y\n1,2\nnan,4\n", ["row 3", "column 'x'", "not finite"]),
    "beyond float64": (b"x,y\n1,1e400\n", ["row 2", "column 'y'", "not finite"]),
}


@pytest.mark.parametrize("reader", READERS)
@pytest.mark.parametrize("raw", BAD.values(), ids=BAD)
def test_a_bad_file_is_named_with_its_row_and_column(tmp_path, reader, raw):
    text, words = raw
    path = tmp_path / "d.csv"
    path.write_bytes(text)
    read, error, what, _ = READERS[reader]
    with pytest.raises(error) as caught:
        read(path)
    message = str(caught.value)
    assert "\n" not in message
    for word in [f"{what} {path}", *words]:
        assert word in message


@pytest.mark.parametrize("reader", READERS)
def test_a_missing_file_and_a_directory_name_the_setting(tmp_path, reader):
    read, error, what, setting = READERS[reader]
    with pytest.raises(error, match=f"{what} .*nope.csv does not exist; check .*{setting}"):
        read(tmp_path / "nope.csv")
    with pytest.raises(error, match=f"{what} .* is a directory, not a CSV file; check .*{setting}"):
        read(tmp_path)


@pytest.mark.parametrize("q", ["", '"'], ids=["numpy path", "csv module path"])
def test_a_value_too_large_for_the_precision_names_the_fix(tmp_path, q):
    path = tmp_path / "d.csv"
    path.write_text(f"x,y\n1,2\n{q}3{q},{q}-1e39{q}\n")
    with pytest.raises(DataError) as caught:
        read_data(path)
    for word in [
        f"data file {path}, row 3, column 'y': value -1e+39 does not fit float32",
        "(largest 3.4e+38); train in float64 with trainer.precision=64, or rescale the data",
    ]:
        assert word in str(caught.value)
    assert read_data(path, torch.float64) == [[1.0, 2.0], [3.0, -1e39]]
    path.write_text("x,y\n1,70000\n")
    with pytest.raises(DataError, match=r"70000 does not fit float16 .*trainer.precision=32"):
        read_data(path, torch.float16)
    path.write_text("x,y\n1,1e39\n")  # bfloat16 reaches 3.4e38, as float32 does: not 1e39
    with pytest.raises(DataError, match=r"1e\+39 does not fit bfloat16 .*trainer.precision=64"):
        read_data(path, torch.bfloat16)


def test_predict_keeps_every_row_as_text(tmp_path):
    path = tmp_path / "inputs.csv"
    path.write_bytes('\ufeffid,x\n"a, b",1.5\n#c,"2"\n'.encode())
    rows, records = read_inputs(path, ["x"])
    assert rows == [[1.5], [2.0]]
    assert records == [{"id": "a, b", "x": "1.5"}, {"id": "#c", "x": "2"}]
