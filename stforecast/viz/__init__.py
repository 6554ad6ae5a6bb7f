"""Pictures: quick-look maps and animations of forecasts."""
