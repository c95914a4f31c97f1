"""The shop's five services. Each owns its tables in its own database and never reads
another's; they meet only in the order saga's messages."""

from shop.services.base import Service
from shop.services.inventory import InventoryService
from shop.services.notification import NotificationService
from shop.services.order import OrderService
from shop.services.payment import PaymentService
from shop.services.shipping import ShippingService

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
