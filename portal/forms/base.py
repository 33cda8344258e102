"""Form base: Bootstrap classes on widgets, and a service's DomainError mapped onto fields."""

from __future__ import annotations

from django import forms

from portal.errors import DomainError


class PortalForm(forms.Form):
    def __init__(self, *args, **kwargs) -> None:
        super().__init__(*args, **kwargs)
        self.style_widgets()

    def style_widgets(self) -> None:
        """Bootstrap classes and help-text links on every widget (call again after adding fields)."""
        for name, field in self.fields.items():
            widget = field.widget
            css = "form-check-input" if isinstance(widget, forms.CheckboxInput) else (
                "form-select" if isinstance(widget, forms.Select) else "form-control")
            if isinstance(widget, forms.CheckboxSelectMultiple | forms.RadioSelect):
                continue
            widget.attrs.setdefault("class", css)
            if field.help_text:
                widget.attrs.setdefault("aria-describedby", f"id_{name}_help")

    def full_clean(self) -> None:
        super().full_clean()
        for name in self.errors:
            if name in self.fields:
                widget = self.fields[name].widget
                widget.attrs["class"] = widget.attrs.get("class", "") + " is-invalid"

    def add_domain_error(self, exc: DomainError) -> None:
        placed = False
        for field, messages in (exc.errors or {}).items():
            name = field if field in self.fields else field.split(".")[-1]
            target = name if name in self.fields else None
            for message in messages:
                self.add_error(target, message)
                placed = True
        if not placed:
            self.add_error(None, exc.detail)
