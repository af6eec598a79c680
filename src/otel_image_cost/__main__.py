"""`python -m otel_image_cost`: the `otel-image-cost` command."""

from .cli import main

raise SystemExit(main())
