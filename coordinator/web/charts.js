'use strict';
// Thin wrappers over Chart.js (Debian's libjs-chart.js, embedded): each chart is created once and its
// data replaced in place on every poll, without animation, so the page does not flicker and tests
// read back exactly what is drawn (window.rxCharts).
const RXCharts = (() => {
  Chart.defaults.animation = false;
  Chart.defaults.maintainAspectRatio = false;
  const COLORS = ['#1f77b4', '#ff7f0e', '#2ca02c', '#d62728', '#9467bd', '#8c564b', '#e377c2'];
  const HIGHLIGHT = '#000000';  // not one of COLORS

  function line(id, yTitles) {
    const scales = {x: {type: 'linear', title: {display: true, text: ''}}};
    yTitles.forEach((t, i) => {
      scales['y' + i] = {type: 'linear', position: i ? 'right' : 'left', title: {display: true, text: t},
                         grid: {drawOnChartArea: i === 0}};
    });
    return new Chart(document.getElementById(id), {type: 'line', data: {datasets: []},
                                                     options: {scales, parsing: false, normalized: true}});
  }

  function bar(id, stacked, yTitle) {
    return new Chart(document.getElementById(id), {
      type: 'bar', data: {labels: [], datasets: []},
      options: {scales: {x: {stacked}, y: {stacked, beginAtZero: true, title: {display: true, text: yTitle}}}}});
  }

  // series: [{label, points: [{x, y}], axis: 0|1}]
  function setLines(chart, xTitle, series) {
    chart.options.scales.x.title.text = xTitle;
    chart.data.datasets = series.map((s, i) => ({
      label: s.label, data: s.points, yAxisID: 'y' + (s.axis || 0), borderColor: COLORS[i % COLORS.length],
      backgroundColor: COLORS[i % COLORS.length], pointRadius: s.points.length > 60 ? 0 : 3, borderWidth: 2}));
    chart.update('none');
  }

  // bars: [{label, values: [..]}] over `labels`; `highlight` (an index or -1) gets a thick black outline.
  function setBars(chart, labels, bars, highlight) {
    chart.data.labels = labels;
    chart.data.datasets = bars.map((b, i) => ({
      label: b.label, data: b.values, backgroundColor: COLORS[i % COLORS.length],
      borderColor: labels.map((_, k) => (k === highlight ? HIGHLIGHT : COLORS[i % COLORS.length])),
      borderWidth: labels.map((_, k) => (k === highlight ? 3 : 1))}));
    chart.update('none');
  }

  return {line, bar, setLines, setBars};
})();
