import { collectDefaultMetrics, Counter, Gauge, Histogram, Registry } from "prom-client";

/** Anything /metrics can serve: the agent's and the controller's metrics both are. */
export interface MetricsSource {
  render(): Promise<RenderedMetrics>;
}

export interface RenderedMetrics {
  contentType: string;
  body: string;
}

/**
 * A registry of its own, never prom-client's global one: several controllers or agents in one
 * process (tests, benchmarks) must not share series. The process metrics keep their standard
 * names (process_cpu_seconds_total, nodejs_heap_size_used_bytes...): the dashboards and alerts
 * operators already have for Node.js processes expect those, and the job label tells whose they are.
 */
export function createRegistry(): Registry {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry });
  return registry;
}

export async function renderRegistry(registry: Registry): Promise<RenderedMetrics> {
  return { contentType: registry.contentType, body: await registry.metrics() };
}

export function counter<L extends string = never>(registry: Registry, name: string, help: string, labelNames: readonly L[] = []): Counter<L> {
  return new Counter({ name, help, labelNames, registers: [registry] });
}

export function gauge<L extends string = never>(registry: Registry, name: string, help: string, labelNames: readonly L[] = []): Gauge<L> {
  return new Gauge({ name, help, labelNames, registers: [registry] });
}

export function histogram<L extends string = never>(registry: Registry, name: string, help: string, buckets: number[], labelNames: readonly L[] = []): Histogram<L> {
  return new Histogram({ name, help, buckets, labelNames, registers: [registry] });
}
