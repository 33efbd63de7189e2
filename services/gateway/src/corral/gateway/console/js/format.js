// How numbers, times and money are shown.

export function time(iso) {
  if (!iso) return "—";
  const d = new Date(iso);
  return Number.isNaN(d.getTime()) ? iso : d.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "medium" });
}

export function duration(seconds) {
  if (seconds == null || Number.isNaN(seconds)) return "—";
  if (seconds < 1) return `${Math.round(seconds * 1000)} ms`;
  if (seconds < 60) return `${seconds.toFixed(seconds < 10 ? 2 : 1)} s`;
  const m = Math.floor(seconds / 60);
  return `${m} min ${Math.round(seconds - m * 60)} s`;
}

export function tokens(n) {
  return (n ?? 0).toLocaleString();
}

export function usd(amount) {
  if (amount == null) return "—";
  if (amount === 0) return "$0.00";
  return amount < 0.01 ? `$${amount.toFixed(4)}` : `$${amount.toFixed(2)}`;
}

export function agentLabel(agent) {
  if (!agent) return "—";
  const name = agent.name ?? agent.id ?? "agent";
  return agent.version ? `${name} v${agent.version}` : name;
}

export function modelOf(agent) {
  const model = agent?.model;
  return typeof model === "string" ? model : model?.id;
}
