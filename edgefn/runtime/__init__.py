"""Floor 2: the sandbox. Engines, module store, ABI v1 and the two C-API crossings, the per-invocation context, warm pools, admission and guest slots, the invoker."""

__all__ = ['abi', 'component', 'concurrency', 'context', 'egress', 'engine', 'fastcall', 'host', 'instance', 'invoker', 'linking', 'memory', 'module_store', 'pool', 'sandbox', 'scheduler', 'scratch']
