/*
 * The soak's catalog as plain data: per service, which upstreams are registered, which pass
 * their check and at what weight; and each service's next scale event, chosen from its step
 * count alone, so that a run replays exactly. Every event changes what HAProxy must run (a
 * server in or out, or a weight): none can coalesce into nothing, so every one has to land.
 */

export const WEIGHT_META = "hafleet-weight";

/** One write to Consul's agent API; `register` of a registered id is a weight change. */
export type ConsulOperation =
  | { kind: "register"; service: string; id: string; port: number; weight: number }
  | { kind: "deregister" | "fail" | "pass"; service: string; id: string };

export interface CatalogShape {
  services: readonly string[];
  /** Every service may use any of them; at least `maxServing` + 1, so a grow can also register. */
  upstreamPorts: readonly number[];
  initialServing: number;
  /** Never fewer: one step then drops at most half of a backend, under the guard's default. */
  minServing: number;
  maxServing: number;
}

interface Instance {
  id: string;
  port: number;
  weight: number;
  passing: boolean;
}

interface ServiceState {
  name: string;
  /** Decorrelates the services' sequences. */
  offset: number;
  step: number;
  rising: boolean;
  instances: Map<string, Instance>;
}

export class SoakCatalog {
  private readonly services = new Map<string, ServiceState>();

  constructor(private readonly shape: CatalogShape) {
    const { minServing, maxServing, initialServing, upstreamPorts } = shape;
    if (!(minServing >= 2 && minServing <= initialServing && initialServing <= maxServing && maxServing < upstreamPorts.length)) {
      throw new RangeError(`catalog shape: need 2 <= minServing <= initialServing <= maxServing < upstreams, got ${minServing}, ${initialServing}, ${maxServing}, ${upstreamPorts.length}`);
    }
    shape.services.forEach((name, offset) => this.services.set(name, { name, offset, step: 0, rising: true, instances: new Map() }));
  }

  /** The registrations of the starting catalog: `initialServing` passing instances per service. */
  initial(): ConsulOperation[] {
    return [...this.services.values()].flatMap((state) =>
      Array.from({ length: this.shape.initialServing }, (_, k) => this.register(state, (state.offset + k) % this.shape.upstreamPorts.length)),
    );
  }

  /**
   * The service's next event, applied to the model: grow or shrink by one, walking between
   * min and max and back (so through the slot count both ways), with every third step a
   * weight change instead. Grows alternate between registering and a failed check passing
   * again; shrinks between a check failing and a deregistration; the server that goes is
   * picked across the list, so slots and added servers alike leave.
   */
  next(service: string): ConsulOperation {
    const state = this.state(service);
    const step = (state.step += 1) + state.offset;
    const serving = this.serving(state);
    if (serving.length <= this.shape.minServing) state.rising = true;
    if (serving.length >= this.shape.maxServing) state.rising = false;
    if (step % 3 === 0) {
      const instance = serving[(step * 7) % serving.length]!;
      const weight = 1 + ((instance.weight + 1 + ((step * 37) % 97)) % 100);
      instance.weight = weight === instance.weight ? (weight % 100) + 1 : weight;
      return { kind: "register", service, id: instance.id, port: instance.port, weight: instance.weight };
    }
    if (state.rising) {
      const failing = [...state.instances.values()].filter((instance) => !instance.passing);
      const free = this.shape.upstreamPorts.flatMap((port, index) => (state.instances.has(instanceId(service, port)) ? [] : [index]));
      if (failing.length > 0 && (free.length === 0 || step % 2 === 0)) {
        const instance = failing[step % failing.length]!;
        instance.passing = true;
        return { kind: "pass", service, id: instance.id };
      }
      return this.register(state, free[(step * 3) % free.length]!);
    }
    const instance = serving[(step * 5) % serving.length]!;
    if (step % 4 < 2) {
      instance.passing = false;
      return { kind: "fail", service, id: instance.id };
    }
    state.instances.delete(instance.id);
    return { kind: "deregister", service, id: instance.id };
  }

  /** What HAProxy must serve for the service: `127.0.0.1:PORT w=WEIGHT`, sorted. */
  expected(service: string): string[] {
    return this.serving(this.state(service))
      .map((instance) => endpointView("127.0.0.1", instance.port, instance.weight))
      .sort();
  }

  private register(state: ServiceState, upstream: number): ConsulOperation {
    const port = this.shape.upstreamPorts[upstream]!;
    const instance: Instance = { id: instanceId(state.name, port), port, weight: 1 + ((state.offset * 13 + upstream * 29) % 100), passing: true };
    state.instances.set(instance.id, instance);
    return { kind: "register", service: state.name, id: instance.id, port, weight: instance.weight };
  }

  private serving(state: ServiceState): Instance[] {
    return [...state.instances.values()].filter((instance) => instance.passing).sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
  }

  private state(service: string): ServiceState {
    const state = this.services.get(service);
    if (state === undefined) throw new Error(`no service ${JSON.stringify(service)} in the soak catalog`);
    return state;
  }
}

/** The one spelling of a served endpoint, for HAProxy's view and Consul's alike. */
export function endpointView(address: string, port: number | string, weight: number | string): string {
  return `${address}:${port} w=${weight}`;
}

function instanceId(service: string, port: number): string {
  return `${service}-${port}`;
}
