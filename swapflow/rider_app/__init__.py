"""The riders' phone page under /app: sign in, find a cabinet, see the price, swap, and follow the swap
as the cabinet acts; swaps, wallet and plan. Server-rendered (jinja2 + htmx) on the console's pieces."""
