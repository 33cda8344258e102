// Dashboard charts (Chart.js, vendored). Data comes from the json_script tag #dashboard-data.
(function () {
  "use strict";
  const source = document.getElementById("dashboard-data");
  if (!source || !window.Chart) return;
  const data = JSON.parse(source.textContent);
  const css = getComputedStyle(document.documentElement);
  const colour = (name, fallback) => (css.getPropertyValue(name) || fallback).trim() || fallback;
  const statusColours = {
    submitted: colour("--bs-primary", "#0d6efd"), approved: "#0d9488", queued: "#adb5bd",
    running: colour("--bs-secondary", "#6c757d"), applied: colour("--bs-success", "#198754"),
    failed: colour("--bs-danger", "#dc3545"), rejected: "#343a40", cancelled: "#6c757d",
  };
  const days = data.days.map((d) => d.slice(5));
  Chart.defaults.font.size = 11;
  Chart.defaults.animation = false;

  const perDay = document.getElementById("chart-per-day");
  if (perDay) {
    new Chart(perDay, {
      type: "bar",
      data: {
        labels: days,
        datasets: Object.entries(data.per_status).map(([status, counts]) => ({
          label: status, data: counts, backgroundColor: statusColours[status] || "#999", stack: "s",
        })),
      },
      options: { maintainAspectRatio: false, scales: { y: { beginAtZero: true, ticks: { precision: 0 } } },
                 plugins: { legend: { position: "bottom", labels: { boxWidth: 10 } } } },
    });
  }
  const median = document.getElementById("chart-median");
  if (median) {
    new Chart(median, {
      type: "line",
      data: { labels: days, datasets: [{ label: "median minutes", data: data.median_minutes, spanGaps: true,
                                         borderColor: statusColours.applied, backgroundColor: statusColours.applied }] },
      options: { maintainAspectRatio: false, scales: { y: { beginAtZero: true } }, plugins: { legend: { display: false } } },
    });
  }
})();
