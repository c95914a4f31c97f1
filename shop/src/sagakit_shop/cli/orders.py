"""``sagakit order``: place and show orders through a running shop's order API."""

from __future__ import annotations

from typing import Annotated

import typer

from sagakit.cli import console, fail, safe

order = typer.Typer(help="Talk to the order API of a running shop.", no_args_is_help=True)
ApiOption = Annotated[
    str, typer.Option("--api", envvar="SAGAKIT_API", help="Base URL of the order API.")
]


def _request(method: str, url: str, **kwargs: object) -> dict[str, object]:
    import httpx

    try:
        response = httpx.request(method, url, timeout=10, **kwargs)  # type: ignore[arg-type]
    except httpx.HTTPError as exc:
        raise fail(f"cannot reach the order API at {url}: {exc}") from exc
    if response.status_code >= 400:
        try:
            detail = response.json().get("detail")
        except ValueError:
            detail = response.text
        raise fail(f"the order API said {response.status_code}: {detail}")
    data: dict[str, object] = response.json()
    return data


@order.command("place")
def place_order(
    customer: Annotated[str, typer.Option(help="Customer id, e.g. c-ada.")],
    sku: Annotated[str, typer.Option(help="Item, e.g. lamp.")],
    quantity: Annotated[int, typer.Option(min=1, help="How many.")] = 1,
    api: ApiOption = "http://127.0.0.1:8000",
    key: Annotated[
        str | None,
        typer.Option(
            "--key",
            help="An idempotency key: placing again with it gives back the first order.",
        ),
    ] = None,
) -> None:
    """Place an order through the HTTP API; its saga starts with it."""
    placed = _request(
        "POST",
        f"{api}/orders",
        json={"customer_id": customer, "sku": sku, "quantity": quantity},
        headers={"Idempotency-Key": key} if key else {},
    )
    what = f"{placed['quantity']} x {placed['sku']} for {placed['amount']}"
    console.print(safe(f"placed {placed['order_id']}: {what} ({placed['status']})"))


@order.command("show")
def show_order(
    order_id: Annotated[str, typer.Argument(help="The order id, e.g. order-101.")],
    api: ApiOption = "http://127.0.0.1:8000",
) -> None:
    """Show an order's status as the order service sees it."""
    found = _request("GET", f"{api}/orders/{order_id}")
    reason = f" ({found['reason']})" if found.get("reason") else ""
    console.print(safe(f"{found['order_id']}: {found['status']}{reason}"))
