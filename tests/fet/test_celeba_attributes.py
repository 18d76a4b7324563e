import numpy as np
import pytest

from fet.data.celeba_attributes import (
    AnnotationError,
    format_celeba_attributes,
    parse_celeba_attributes,
    read_celeba_attributes,
)
from fet.editing.attributes import ATTRIBUTE_INDEX, CELEBA_ATTRIBUTES
from tests.conftest import media


def test_reads_the_real_celebahq_file():
    labels = read_celeba_attributes(str(media("annotations/CelebAMask-HQ-attribute-anno.txt")))
    assert len(labels) == 30000
    first = labels["0.jpg"]
    assert first.dtype == np.int8 and first.shape == (40,)
    assert set(np.unique(np.stack(list(labels.values())))) <= {0, 1}
    # 0.jpg: -1 1 1 1 ... in the file → Arched_Eyebrows present, 5_o_Clock_Shadow absent
    assert first[ATTRIBUTE_INDEX["5_o_Clock_Shadow"]] == 0 and first[ATTRIBUTE_INDEX["Arched_Eyebrows"]] == 1


def test_round_trip_with_unknown_values():
    labels = {"a.png": np.array([1, 0, -1] * 13 + [1], np.int8)}
    back = parse_celeba_attributes(format_celeba_attributes(labels))
    assert np.array_equal(back["a.png"], labels["a.png"])


@pytest.mark.parametrize(
    "text, match",
    [
        ("", "expected a count line and a header line"),
        ("x\n" + " ".join(CELEBA_ATTRIBUTES), "line 1 should be the number of images"),
        ("1\nSmiling Male", "line 2 should list the 40 CelebA attributes"),
        ("1\n" + " ".join(CELEBA_ATTRIBUTES) + "\na.jpg 1 1", "expected a file name and 40 values, got 3"),
        ("1\n" + " ".join(CELEBA_ATTRIBUTES) + "\na.jpg " + "2 " * 40, "values must be 1, -1"),
        ("2\n" + " ".join(CELEBA_ATTRIBUTES) + "\na.jpg " + "1 " * 40, "header says 2 images, found 1"),
    ],
)
def test_malformed_files_are_rejected_with_the_reason(text, match):
    with pytest.raises(AnnotationError, match=match):
        parse_celeba_attributes(text)
