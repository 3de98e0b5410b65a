"""mod_proxy, mod_proxy_balancer and mod_proxy_hcheck (reference 7)."""
