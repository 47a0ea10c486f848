"""Property: no tenant reaches another tenant's adapter by any model string, alias, header or
version spelling; and a foreign adapter's 404 is indistinguishable from an unknown one's."""

from __future__ import annotations

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from server.errors import Forbidden, InvalidRequest, NotFound
from server.serving.routing import Router
from server.serving.tenants import Tenant
from server.store.manifest import Channels
from server.store.store import AdapterStore
from tests.factory import add_version

OURS = ("a-sentiment", "a-qa")
THEIRS = ("b-secret", "b-qa")
TENANT_A = Tenant(
    name="a",
    adapters=OURS,
    default="a-sentiment",
    tasks={"sentiment": "a-sentiment", "qa": "a-qa"},
    allow_base=False,
)
TENANT_B_TASKS = {"secret": "b-secret", "qa": "b-qa", "sentiment": "b-secret"}


@pytest.fixture(scope="module")
def router(tmp_path_factory: pytest.TempPathFactory) -> Router:
    from server.store.layout import ValidationLimits
    from tests.factory import TINY_SPEC

    tmp = tmp_path_factory.mktemp("iso")
    store = AdapterStore(tmp / "store", TINY_SPEC, ValidationLimits(max_lora_rank=8))
    for name in (*OURS, *THEIRS):
        add_version(store, tmp, name, "v1")
        add_version(store, tmp, name, "v2")
        if name != "b-qa":  # b-qa has no stable: its message must not leak either
            store.update_channels(
                name, lambda c: Channels(stable="v2", previous="v1"), actor="t", action="promote"
            )
    return Router(store, "tiny-base")


pieces = st.sampled_from(
    [
        *OURS,
        *THEIRS,
        *TENANT_B_TASKS,
        "sentiment",
        "qa",
        "tiny-base",
        "auto",
        "",
        "B-SECRET",
        "b-secret ",
        " b-secret",
        "b_secret",
        "b-secret@v1",
        "b-secret@v2",
        "b-secret@1.0.0",
        "a-sentiment@v1",
        "sentiment@v2",
        "secret@v1",
        "../b-secret",
        "a-qa/../b-secret",
        "b-secret%40v1",
        "b-secret\x00",
        "\uff42-secret",
        "*",
        "@",
        "@v1",
    ]
)
models = st.one_of(
    st.none(), pieces, st.builds(lambda a, b: a + b, pieces, pieces), st.text(max_size=20)
)
tasks = st.one_of(
    st.none(), st.sampled_from([*TENANT_B_TASKS, "sentiment", "qa", "", "x"]), st.text(max_size=10)
)


@settings(
    max_examples=400, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(model=models, task=tasks, user=st.one_of(st.none(), st.text(max_size=8)))
def test_no_path_to_a_foreign_adapter(
    router: Router, model: str | None, task: str | None, user: str | None
) -> None:
    try:
        target = router.resolve_for(TENANT_A, model, task, user, hide_foreign=True)
    except (NotFound, InvalidRequest):
        return
    assert target.version is not None, "tenant a may not call the base"
    assert target.version.name in OURS


@pytest.mark.parametrize("foreign", ["b-secret", "b-secret@v1", "b-qa", "b-qa@v2", "tiny-base"])
def test_foreign_and_unknown_get_the_same_404(router: Router, foreign: str) -> None:
    unknown = foreign.replace("b-", "zz-").replace("tiny-base", "zz-base")
    errors = []
    for model in (foreign, unknown):
        with pytest.raises(NotFound) as info:
            router.resolve_for(TENANT_A, model, hide_foreign=True)
        errors.append(info.value)
    assert errors[0].message.replace(foreign, "X") == errors[1].message.replace(unknown, "X")
    assert (errors[0].status, errors[0].code) == (errors[1].status, errors[1].code)


def test_without_hiding_a_known_foreign_adapter_is_403(router: Router) -> None:
    with pytest.raises(Forbidden):
        router.resolve_for(TENANT_A, "b-secret", hide_foreign=False)
    with pytest.raises(NotFound):
        router.resolve_for(TENANT_A, "zz-unknown", hide_foreign=False)


@pytest.mark.parametrize(
    ("model", "task", "expected"),
    [
        ("a-qa", "sentiment", "a-qa@v2"),  # explicit model wins over X-Task
        ("qa", None, "a-qa@v2"),  # task alias in the model field
        ("qa@v1", None, "a-qa@v1"),  # alias with a version
        (None, "qa", "a-qa@v2"),  # X-Task header
        ("auto", "qa", "a-qa@v2"),
        (None, None, "a-sentiment@v2"),  # the tenant's default
        ("", None, "a-sentiment@v2"),
    ],
)
def test_resolution_order(
    router: Router, model: str | None, task: str | None, expected: str
) -> None:
    assert router.resolve_for(TENANT_A, model, task).engine_model == expected
