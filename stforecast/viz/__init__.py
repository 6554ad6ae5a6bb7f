"""Pictures: the one precipitation palette (`palette`) and quick-look maps and animations of
forecasts (`quicklook`)."""
