"""ControlNet (Zhang et al. 2023): models, units with the sd-webui-controlnet extension's fields,
preprocessors, and the residuals they add to the UNet (docs/controlnet.md)."""
from .models import SHIPPED_CONTROLNETS, load_controlnet
from .units import ControlNetUnit, parse_units

__all__ = ["SHIPPED_CONTROLNETS", "ControlNetUnit", "load_controlnet", "parse_units"]
