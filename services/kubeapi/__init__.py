"""A small in-memory Kubernetes API server stand-in, for tests and the local stack.

It speaks enough of the real REST protocol for the stock kubectl and kubernetes-asyncio: the
kinds in ``kinds.KINDS``, list/watch/get/create/update/patch/delete, the /status subresource,
discovery and a stub OpenAPI. Start it with ``server.ApiServer`` (in-process) or
``python -m shardgate.kubeapi``.
"""
