"""The shop's five services. Each owns its tables in its own database and never reads
another's; they meet only in the order saga's messages."""

from sagakit_shop.services.base import Service
from sagakit_shop.services.inventory import InventoryService
from sagakit_shop.services.notification import NotificationService
from sagakit_shop.services.order import OrderService
from sagakit_shop.services.payment import PaymentService
from sagakit_shop.services.shipping import ShippingService

SERVICES: dict[str, type[Service]] = {
    "order": OrderService,
    "inventory": InventoryService,
    "payment": PaymentService,
    "shipping": ShippingService,
    "notification": NotificationService,
}

__all__ = [
    "SERVICES",
    "InventoryService",
    "NotificationService",
    "OrderService",
    "PaymentService",
    "Service",
    "ShippingService",
]
