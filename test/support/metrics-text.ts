/** One series of a Prometheus text exposition, written exactly as exposed (labels included); undefined when absent. */
export function seriesValue(body: string, series: string): number | undefined {
  const line = body.split("\n").find((candidate) => candidate.startsWith(`${series} `));
  return line === undefined ? undefined : Number(line.slice(series.length + 1));
}

/** A series read from a running process's /metrics on 127.0.0.1:port. */
export async function scrapeSeries(port: number, series: string): Promise<number | undefined> {
  const response = await fetch(`http://127.0.0.1:${port}/metrics`);
  return seriesValue(await response.text(), series);
}
