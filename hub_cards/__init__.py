"""Model card templates for the Hugging Face Hub (Jinja, rendered by ``huggingface_hub.ModelCard``).

Installed as ``timm_introspect.hub_cards``; read with ``importlib.resources``.
"""
