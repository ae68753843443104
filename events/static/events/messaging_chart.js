/* The Messaging page's 30-day chart: Chart.js (vendored, events/vendor/chartjs) drawing the daily
   counts the page embeds with json_script (#messaging-chart-data): dated axes, every series' value
   for a day on hover, a legend with each series' 30-day total. */
(function () {
    "use strict";
    var canvas = document.getElementById("messaging-chart");
    var source = document.getElementById("messaging-chart-data");
    if (!canvas || !source || typeof window.Chart === "undefined") {
        return;
    }
    var data = JSON.parse(source.textContent);
    var colors = {published: "#417690", handled: "#79aec8", invoices: "#e0a030"};
    var number = new Intl.NumberFormat();
    var utc = function (iso) {
        return new Date(iso + "T00:00:00Z");
    };
    var shortDay = new Intl.DateTimeFormat(undefined, {month: "short", day: "numeric", timeZone: "UTC"});
    var longDay = new Intl.DateTimeFormat(undefined, {
        weekday: "short", year: "numeric", month: "short", day: "numeric", timeZone: "UTC"
    });
    var style = getComputedStyle(document.documentElement);
    var fg = style.getPropertyValue("--body-quiet-color").trim();
    if (fg) {
        window.Chart.defaults.color = fg;
    }

    new window.Chart(canvas, {
        type: "line",
        data: {
            labels: data.days,
            datasets: data.series.map(function (s) {
                return {
                    label: s.label + " (" + data.days.length + " days: " + number.format(s.total) + ")",
                    data: s.values,
                    borderColor: colors[s.key],
                    backgroundColor: colors[s.key],
                    pointRadius: 2,
                    tension: 0.2
                };
            })
        },
        options: {
            animation: false,
            responsive: true,
            maintainAspectRatio: false,
            interaction: {mode: "index", intersect: false},
            scales: {
                x: {
                    title: {display: true, text: "day (UTC)"},
                    ticks: {
                        maxRotation: 0,
                        autoSkip: true,
                        callback: function (value) {
                            return shortDay.format(utc(this.getLabelForValue(value)));
                        }
                    }
                },
                y: {
                    beginAtZero: true,
                    title: {display: true, text: "per day"},
                    ticks: {precision: 0}
                }
            },
            plugins: {
                legend: {position: "bottom"},
                tooltip: {
                    callbacks: {
                        title: function (items) {
                            return longDay.format(utc(items[0].label));
                        },
                        label: function (item) {
                            return data.series[item.datasetIndex].label + ": " + number.format(item.parsed.y);
                        }
                    }
                }
            }
        }
    });
}());
