// An instance's monitoring charts (Chart.js, vendored). Data: the json_script tag #monitoring-series.
(function () {
  "use strict";
  const source = document.getElementById("monitoring-series");
  if (!source || !window.Chart) return;
  const data = JSON.parse(source.textContent);
  const labels = data.t.map((t) => t.slice(11, 16));
  Chart.defaults.font.size = 11;
  Chart.defaults.animation = false;
  const line = (id, datasets) => {
    const canvas = document.getElementById(id);
    if (!canvas) return;
    new Chart(canvas, {
      type: "line",
      data: { labels, datasets: datasets.map(([label, key, colour]) => ({
        label, data: data[key], borderColor: colour, backgroundColor: colour, spanGaps: true, pointRadius: 0 })) },
      options: { maintainAspectRatio: false, scales: { y: { beginAtZero: true } },
                 plugins: { legend: { position: "bottom", labels: { boxWidth: 10 } } } },
    });
  };
  line("chart-connections", [["connections", "connections", "#0d6efd"], ["blocked", "blocked_sessions", "#dc3545"],
                             ["idle in transaction", "idle_in_transaction", "#fd7e14"]]);
  line("chart-transactions", [["longest transaction (s)", "longest_transaction_seconds", "#6f42c1"]]);
  line("chart-lag", [["replication lag (bytes)", "replication_lag_bytes", "#198754"]]);
  line("chart-xid", [["transaction ID age", "max_xid_age", "#6c757d"]]);
})();
