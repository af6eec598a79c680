"""The installed dependency set is coherent, and the package ships what it needs at run time."""

from __future__ import annotations

from importlib import metadata, resources


def test_opentelemetry_packages_resolve_to_one_release_train() -> None:
    api, sdk = metadata.version("opentelemetry-api"), metadata.version("opentelemetry-sdk")
    instrumentation = metadata.version("opentelemetry-instrumentation")
    semconv = metadata.version("opentelemetry-semantic-conventions")
    assert api == sdk
    assert instrumentation == semconv
    # 1.N.x of the API/SDK pairs with 0.(N+21)bX of the instrumentation/semconv train.
    assert int(semconv.split(".")[1].split("b")[0]) == int(sdk.split(".")[1]) + 21


def test_package_data_is_installed() -> None:
    package = resources.files("otel_image_cost")
    assert package.joinpath("prices.yaml").is_file()
    assert package.joinpath("py.typed").is_file()
