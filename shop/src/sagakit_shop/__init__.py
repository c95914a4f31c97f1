"""The reference e-commerce engine built on sagakit: five services, one order saga."""
