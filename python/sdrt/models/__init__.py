"""Architecture configs (SD1.x, SD2.x, SDXL, toy) and component construction."""
