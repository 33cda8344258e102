"""Forms of the UI; DomainErrorFormMixin maps service errors onto fields."""
