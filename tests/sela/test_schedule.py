import pytest

from otlearn.sela import LabelSchedule


def test_quadratic_is_dense_early():
    epochs = LabelSchedule("quadratic", rounds=10).label_epochs(100)
    assert epochs == [0, 1, 4, 9, 16, 25, 36, 49, 64, 81]
    gaps = [b - a for a, b in zip(epochs, epochs[1:])]
    assert gaps == sorted(gaps)


def test_every_and_explicit():
    assert LabelSchedule("every", every=3, start=1).label_epochs(10) == [1, 4, 7]
    assert LabelSchedule("epochs", epochs=[7, 2, 2, 30]).label_epochs(10) == [2, 7]
    assert LabelSchedule("quadratic", rounds=50).label_epochs(10) == list(range(10))


@pytest.mark.parametrize("kwargs", [dict(kind="cubic"), dict(kind="every", every=0), dict(kind="quadratic", rounds=0),
                                    dict(kind="epochs", epochs=[-1])])
def test_bad_schedule(kwargs):
    with pytest.raises(ValueError):
        LabelSchedule(**kwargs)
