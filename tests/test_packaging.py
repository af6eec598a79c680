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


def test_distribution_metadata() -> None:
    from otel_image_cost import __version__

    dist = metadata.distribution("otel-image-cost")
    assert dist.version == __version__ == "0.2.0"
    assert dist.metadata["License-Expression"] == "Apache-2.0"
    assert "Programming Language :: Python :: 3.11" in dist.metadata.get_all("Classifier", [])
    [script] = [ep for ep in dist.entry_points if ep.group == "console_scripts"]
    assert (script.name, script.value) == ("otel-image-cost", "otel_image_cost.cli:main")


def test_license_is_the_full_apache_2_text() -> None:
    from conftest import ROOT

    text = (ROOT / "LICENSE").read_text()
    assert text.lstrip().startswith("Apache License\n                           Version 2.0, January 2004")
    assert "END OF TERMS AND CONDITIONS" in text
    assert len(text.splitlines()) == 201
