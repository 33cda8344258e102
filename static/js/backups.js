// An instance's restore drills: RTO and RPO per drill (Chart.js, vendored). Data: #drill-series.
(function () {
  "use strict";
  const source = document.getElementById("drill-series");
  const canvas = document.getElementById("chart-drills");
  if (!source || !canvas || !window.Chart) return;
  const data = JSON.parse(source.textContent);
  Chart.defaults.font.size = 11;
  Chart.defaults.animation = false;
  new Chart(canvas, {
    type: "line",
    data: {
      labels: data.t.map((t) => t.slice(0, 16).replace("T", " ")),
      datasets: [
        { label: "RTO (s)", data: data.rto, borderColor: "#0d6efd", backgroundColor: "#0d6efd", spanGaps: true },
        { label: "RPO (s)", data: data.rpo, borderColor: "#fd7e14", backgroundColor: "#fd7e14", spanGaps: true },
      ],
    },
    options: { maintainAspectRatio: false, scales: { y: { beginAtZero: true } },
               plugins: { legend: { position: "bottom", labels: { boxWidth: 10 } } } },
  });
})();
